"""Chapter 4.2.3 RLHF (and 6.4): the third stage of training, learning from preferences.

=================  ==================================================================
``preference.py``  pairs ``{"prompt", "chosen", "rejected"}``: made up from the world's
                   answers (offline) or sampled from the SFT model and labelled by them
                   (on-policy); JSONL files; tokenization with the SFT chat template
``reward.py``      the reward model: a LLaMA backbone with a scalar head on the last
                   token, Bradley–Terry loss, pairwise accuracy
``dpo.py``         Direct Preference Optimization against a frozen reference (DPO, cDPO, IPO, RPO)
``online_dpo.py``  online (iterative) DPO: each round, pairs of the current policy's own replies
``ppo.py``         RLHF with PPO: rollouts, KL-penalised rewards, GAE, clipped losses
``evaluate.py``    held-out correctness, greedy and sampled, by failure mode, with errors
=================  ==================================================================
"""
from .evaluate import correctness, paired_difference
from .dpo import dpo_loss, precompute_reference_logps, sequence_logps, train_dpo
from .online_dpo import OnlineDPOConfig, train_online_dpo
from .preference import (
    MISTAKES, PreferenceDataset, PreferencePair, collate_pairs, label_reply, make_mistake, offline_pairs,
    on_policy_pairs, read_preference_jsonl, tokenize_pair, tokenize_reply, write_preference_jsonl,
)
from .reward import (
    RewardModel, bradley_terry_loss, load_reward_model, pairwise_accuracy, save_reward_model, score_replies,
    train_reward_model,
)

__all__ = [
    "PreferencePair", "PreferenceDataset", "collate_pairs", "read_preference_jsonl", "write_preference_jsonl",
    "offline_pairs", "on_policy_pairs", "label_reply", "make_mistake", "tokenize_pair", "tokenize_reply", "MISTAKES",
    "RewardModel", "save_reward_model", "load_reward_model", "bradley_terry_loss", "pairwise_accuracy", "score_replies", "train_reward_model",
    "dpo_loss", "sequence_logps", "precompute_reference_logps", "train_dpo", "OnlineDPOConfig", "train_online_dpo", "correctness", "paired_difference",
]
