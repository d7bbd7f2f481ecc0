"""Tools to prove ops right: ``gradcheck`` (finite differences) and hypothesis ``strategies``."""
from .gradcheck import GradcheckError, directional_grad, gradcheck, numerical_grad

__all__ = ["gradcheck", "numerical_grad", "directional_grad", "GradcheckError"]
