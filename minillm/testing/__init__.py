"""Tools to prove ops right: ``gradcheck`` (finite differences) and hypothesis ``strategies``."""
from .gradcheck import GradcheckError, gradcheck, numerical_grad

__all__ = ["gradcheck", "numerical_grad", "GradcheckError"]
