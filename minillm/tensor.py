"""The ``Tensor``: a NumPy array plus what autograd needs (``requires_grad``, ``grad``, ``grad_fn``).

Names follow PyTorch so the book's code reads the same here. One deliberate difference:
``t.data`` is the underlying ``numpy.ndarray`` (as in DeZero/micrograd), which is what the
optimizers and ``nn.init`` update in place. ``t.numpy()`` returns the same array.

dtypes: float32 by default; float64 for gradient checks; int64 for token ids. Python
numbers combined with a tensor take the tensor's dtype, so ``x * 0.5`` never turns a
float32 tensor into float64.
"""
from __future__ import annotations

import builtins

import numpy as np

from . import autograd

float16 = np.dtype("float16")
float32 = np.dtype("float32")
float64 = np.dtype("float64")
int8 = np.dtype("int8")
int16 = np.dtype("int16")
int32 = np.dtype("int32")
int64 = np.dtype("int64")
uint8 = np.dtype("uint8")
bool_ = np.dtype("bool")
long = int64
float = float32  # noqa: A001 - mirrors torch.float
double = float64

_default_float = float32


def get_default_dtype() -> np.dtype:
    return _default_float


def set_default_dtype(dtype) -> None:
    """Dtype used for Python floats and ``mi.randn`` etc. (float32 or float64)."""
    global _default_float
    dtype = np.dtype(dtype)
    if dtype not in (float32, float64):
        raise ValueError(f"set_default_dtype: expected float32 or float64, got {dtype}")
    _default_float = dtype


def _to_array(data, dtype=None) -> np.ndarray:
    """Turn user data into an ndarray with PyTorch's dtype inference.

    NumPy arrays keep their dtype; Python floats become the default float dtype (float32),
    Python ints become int64 and bools stay bool.
    """
    if isinstance(data, Tensor):
        arr = data.data
    elif isinstance(data, np.ndarray):
        arr = data
    else:
        arr = np.asarray(data)
        if arr.dtype == float64 and dtype is None:
            arr = arr.astype(_default_float)
        elif arr.dtype.kind in "iu" and dtype is None:
            arr = arr.astype(int64)
        elif arr.dtype.kind not in "biuf":
            raise TypeError(f"tensor(): cannot make a tensor from {type(data).__name__} with dtype {arr.dtype}")
    if dtype is not None:
        arr = arr.astype(np.dtype(dtype), copy=False)
    return arr


class Tensor:
    """An n-dimensional array that can record the operations applied to it.

    >>> x = mi.tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    tensor([2., 4., 6.], dtype=float32)
    """

    __slots__ = ("data", "requires_grad", "grad", "grad_fn", "_retains_grad", "__weakref__")
    __array_priority__ = 1000  # so ``ndarray + Tensor`` calls Tensor.__radd__

    def __init__(self, data, dtype=None, requires_grad: bool = False):
        self.data = _to_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating point tensors can require gradients, got dtype {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self.grad_fn = None
        self._retains_grad = False

    @classmethod
    def _wrap(cls, array, requires_grad=False):
        """Fast constructor for op outputs (no dtype inference)."""
        t = object.__new__(cls)
        t.data = array if isinstance(array, np.ndarray) else np.asarray(array)
        t.requires_grad = requires_grad
        t.grad = None
        t.grad_fn = None
        t._retains_grad = False
        return t

    # ------------------------------------------------------------------ basic properties
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def T(self) -> "Tensor":
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self) -> "Tensor":
        return self.transpose(-2, -1)

    def dim(self) -> int:
        return self.data.ndim

    def size(self, dim=None):
        if dim is None:
            return self.data.shape
        return self.data.shape[_ops.normalize_dim(dim, self.ndim)]

    def numel(self) -> int:
        return int(self.data.size)

    def element_size(self) -> int:
        return self.data.itemsize

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item(): only one-element tensors can be converted to Python scalars, got shape {self.shape}")
        return self.data.item()

    def numpy(self) -> np.ndarray:
        return self.data

    def tolist(self):
        return self.data.tolist()

    def __bool__(self):
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor with {self.data.size} elements is ambiguous")
        return bool(self.data)

    def __float__(self):
        return builtins.float(self.item())  # `float` in this module is the dtype alias

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError("only integer tensors of a single element can be used as an index")
        return int(self.data)

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    __hash__ = object.__hash__  # __eq__ is elementwise, identity hashing keeps dict/set use

    # ------------------------------------------------------------------ autograd API
    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        """Compute d(self)/d(leaf) for every leaf with ``requires_grad`` and add it to ``leaf.grad``."""
        autograd.backward(self, gradient, retain_graph)

    def detach(self) -> "Tensor":
        """Same data (shared, not copied), cut from the graph."""
        return Tensor._wrap(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"only floating point tensors can require gradients, got dtype {self.dtype}")
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError("requires_grad_(False) is only allowed on leaf tensors; use detach()")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        """Also keep ``.grad`` on this non-leaf tensor after backward()."""
        self._retains_grad = True

    def _accumulate_grad(self, g: np.ndarray) -> None:
        # Gradients accumulate across backward() calls until zero_grad() sets them to None.
        if self.grad is None:
            self.grad = Tensor._wrap(np.array(g, dtype=self.dtype, copy=True))
        else:
            self.grad.data += g

    # ------------------------------------------------------------------ in-place helpers (no graph)
    def _check_inplace(self, what):
        if autograd.is_grad_enabled() and (self.grad_fn is not None or self.requires_grad):
            raise RuntimeError(
                f"{what}: in-place change of a tensor that is part of an autograd graph; "
                "do it inside mi.no_grad() or on .detach()"
            )

    def zero_(self) -> "Tensor":
        self._check_inplace("zero_()")
        self.data[...] = 0
        return self

    def fill_(self, value) -> "Tensor":
        self._check_inplace("fill_()")
        self.data[...] = value
        return self

    def copy_(self, src) -> "Tensor":
        self._check_inplace("copy_()")
        src = src.data if isinstance(src, Tensor) else np.asarray(src)
        try:
            self.data[...] = np.broadcast_to(src, self.shape)
        except ValueError:
            raise ValueError(f"copy_(): source shape {src.shape} cannot be broadcast to {self.shape}") from None
        return self

    def __setitem__(self, index, value):
        self._check_inplace("tensor[...] = value")
        value = value.data if isinstance(value, Tensor) else value
        self.data[_ops.raw_index(index)] = value

    # ------------------------------------------------------------------ conversions
    def to(self, dtype) -> "Tensor":
        return _ops.to_dtype(self, dtype)

    def type(self, dtype) -> "Tensor":
        return _ops.to_dtype(self, dtype)

    def float(self) -> "Tensor":
        return _ops.to_dtype(self, float32)

    def double(self) -> "Tensor":
        return _ops.to_dtype(self, float64)

    def long(self) -> "Tensor":
        return _ops.to_dtype(self, int64)

    def int(self) -> "Tensor":
        return _ops.to_dtype(self, int32)

    def bool(self) -> "Tensor":
        return _ops.to_dtype(self, bool_)

    def clone(self) -> "Tensor":
        return _ops.clone(self)

    # ------------------------------------------------------------------ repr
    def __repr__(self):
        body = np.array2string(self.data, separator=", ", precision=4, threshold=100, edgeitems=3, prefix="tensor(")
        extras = []
        if self.dtype not in (float32, int64, bool_):
            extras.append(f"dtype={self.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name()}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        if self.dtype in (float32, int64, bool_) and not extras:
            extras.append(f"dtype={self.dtype}")
        return "tensor(" + body + (", " + ", ".join(extras) if extras else "") + ")"

    # ------------------------------------------------------------------ arithmetic operators
    def __add__(self, other):
        return _ops.add(self, other)

    def __radd__(self, other):
        return _ops.add(other, self)

    def __sub__(self, other):
        return _ops.sub(self, other)

    def __rsub__(self, other):
        return _ops.sub(other, self)

    def __mul__(self, other):
        return _ops.mul(self, other)

    def __rmul__(self, other):
        return _ops.mul(other, self)

    def __truediv__(self, other):
        return _ops.div(self, other)

    def __rtruediv__(self, other):
        return _ops.div(other, self)

    def __pow__(self, other):
        return _ops.pow(self, other)

    def __rpow__(self, other):
        return _ops.pow(other, self)

    def __neg__(self):
        return _ops.neg(self)

    def __pos__(self):
        return self

    def __matmul__(self, other):
        return _ops.matmul(self, other)

    def __rmatmul__(self, other):
        return _ops.matmul(other, self)

    def __abs__(self):
        return _ops.abs(self)

    # comparisons return bool tensors and never carry gradients
    def __eq__(self, other):
        return _ops.compare(np.equal, self, other)

    def __ne__(self, other):
        return _ops.compare(np.not_equal, self, other)

    def __lt__(self, other):
        return _ops.compare(np.less, self, other)

    def __le__(self, other):
        return _ops.compare(np.less_equal, self, other)

    def __gt__(self, other):
        return _ops.compare(np.greater, self, other)

    def __ge__(self, other):
        return _ops.compare(np.greater_equal, self, other)

    def __invert__(self):
        if self.dtype != bool_:
            raise TypeError(f"~ is only defined for bool tensors, got {self.dtype}")
        return Tensor._wrap(~self.data)

    def __and__(self, other):
        return _ops.compare(np.logical_and, self, other)

    def __or__(self, other):
        return _ops.compare(np.logical_or, self, other)

    def __getitem__(self, index):
        return _ops.getitem(self, index)

    # ------------------------------------------------------------------ elementwise methods
    def add(self, other):
        return _ops.add(self, other)

    def sub(self, other):
        return _ops.sub(self, other)

    def mul(self, other):
        return _ops.mul(self, other)

    def div(self, other):
        return _ops.div(self, other)

    def exp(self):
        return _ops.exp(self)

    def log(self):
        return _ops.log(self)

    def sqrt(self):
        return _ops.sqrt(self)

    def rsqrt(self):
        return _ops.rsqrt(self)

    def abs(self):
        return _ops.abs(self)

    def neg(self):
        return _ops.neg(self)

    def tanh(self):
        return _ops.tanh(self)

    def sigmoid(self):
        return _ops.sigmoid(self)

    def relu(self):
        return _ops.relu(self)

    def clamp(self, min=None, max=None):  # noqa: A002 - PyTorch's names
        return _ops.clamp(self, min, max)

    clip = clamp

    def maximum(self, other):
        return _ops.maximum(self, other)

    def minimum(self, other):
        return _ops.minimum(self, other)

    def masked_fill(self, mask, value):
        return _ops.masked_fill(self, mask, value)

    def where(self, condition, other):
        return _ops.where(condition, self, other)

    def matmul(self, other):
        return _ops.matmul(self, other)

    def softmax(self, dim):
        return _ops.softmax(self, dim)

    def log_softmax(self, dim):
        return _ops.log_softmax(self, dim)

    # ------------------------------------------------------------------ reductions
    def sum(self, dim=None, keepdim=False):
        return _ops.sum(self, dim, keepdim)

    def mean(self, dim=None, keepdim=False):
        return _ops.mean(self, dim, keepdim)

    def max(self, dim=None, keepdim=False):
        return _ops.max(self, dim, keepdim)

    def min(self, dim=None, keepdim=False):
        return _ops.min(self, dim, keepdim)

    def amax(self, dim=None, keepdim=False):
        return _ops.amax(self, dim, keepdim)

    def amin(self, dim=None, keepdim=False):
        return _ops.amin(self, dim, keepdim)

    def var(self, dim=None, keepdim=False, correction=1, unbiased=None):
        return _ops.var(self, dim, keepdim, correction, unbiased)

    def std(self, dim=None, keepdim=False, correction=1, unbiased=None):
        return _ops.std(self, dim, keepdim, correction, unbiased)

    def logsumexp(self, dim, keepdim=False):
        return _ops.logsumexp(self, dim, keepdim)

    def argmax(self, dim=None, keepdim=False):
        return _ops.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return _ops.argmin(self, dim, keepdim)

    # ------------------------------------------------------------------ shape and movement
    def reshape(self, *shape):
        return _ops.reshape(self, *shape)

    def view(self, *shape):
        return _ops.reshape(self, *shape)

    def view_as(self, other):
        return _ops.reshape(self, other.shape)

    def transpose(self, dim0, dim1):
        return _ops.transpose(self, dim0, dim1)

    def permute(self, *dims):
        return _ops.permute(self, *dims)

    def expand(self, *sizes):
        return _ops.expand(self, *sizes)

    def expand_as(self, other):
        return _ops.expand(self, other.shape)

    def squeeze(self, dim=None):
        return _ops.squeeze(self, dim)

    def unsqueeze(self, dim):
        return _ops.unsqueeze(self, dim)

    def flatten(self, start_dim=0, end_dim=-1):
        return _ops.flatten(self, start_dim, end_dim)

    def contiguous(self):
        return _ops.contiguous(self)

    def is_contiguous(self) -> bool:
        return bool(self.data.flags["C_CONTIGUOUS"])

    def split(self, split_size_or_sections, dim=0):
        return _ops.split(self, split_size_or_sections, dim)

    def chunk(self, chunks, dim=0):
        return _ops.chunk(self, chunks, dim)

    def tril(self, diagonal=0):
        return _ops.tril(self, diagonal)

    def triu(self, diagonal=0):
        return _ops.triu(self, diagonal)

    def gather(self, dim, index):
        return _ops.gather(self, dim, index)

    def index_select(self, dim, index):
        return _ops.index_select(self, dim, index)

    def repeat_interleave(self, repeats, dim):
        return _ops.repeat_interleave(self, repeats, dim)


from . import ops as _ops  # noqa: E402  (ops need the Tensor class defined above)
