"""``minillm.optim``: optimizers, learning-rate schedules, gradient clipping (Happy LLM 4.2, 5.3, 6.x).

    import minillm as mi
    from minillm.optim import AdamW, WarmupCosine, clip_grad_norm_, param_groups_for_weight_decay

    optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=3e-4, betas=(0.9, 0.95))
    scheduler = WarmupCosine(optimizer, warmup_steps=100, total_steps=2000, min_lr=3e-5)
    for step in range(2000):
        loss = model(x, targets=y).loss
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()

    optimizer.py      Optimizer base: param groups, state, state_dict/load_state_dict
    sgd.py            SGD (momentum, Nesterov, weight decay)
    adam.py           Adam (L2 weight decay) and AdamW (decoupled weight decay)
    lr_scheduler.py   constant / warmup + cosine / linear decay, as functions and objects
    clip.py           clip_grad_norm_
    groups.py         param_groups_for_weight_decay (no decay on norms, biases, embeddings)
    serialization.py  flatten_state_dict / unflatten_state_dict (safetensors + JSON, nothing executable)
"""
from . import lr_scheduler
from .adam import Adam, AdamW
from .clip import clip_grad_norm_
from .groups import NO_DECAY_NAME_PARTS, param_groups_for_weight_decay
from .lr_scheduler import (
    ConstantLR, LambdaLR, LinearDecay, LRScheduler, WarmupCosine, constant_lr, cosine_with_warmup, linear_decay,
)
from .optimizer import Optimizer
from .serialization import flatten_state_dict, unflatten_state_dict
from .sgd import SGD

__all__ = [
    "Adam", "AdamW", "ConstantLR", "LRScheduler", "LambdaLR", "LinearDecay", "NO_DECAY_NAME_PARTS", "Optimizer",
    "SGD", "WarmupCosine", "clip_grad_norm_", "constant_lr", "cosine_with_warmup", "flatten_state_dict",
    "linear_decay", "lr_scheduler", "param_groups_for_weight_decay", "unflatten_state_dict",
]
