"""Which models are stacks of ``nn.Linear`` that treat every sample on its own.

The linear fast path of :mod:`raytda.core.grads` takes each layer's per-sample weight
gradient as ``delta a^T`` from one batched forward and backward. That is exact when

- every parameter is the weight or bias of an ``nn.Linear`` called once per forward
  (a layer called twice would need the sum of two outer products);
- each layer's input is (batch, in_features): row b of it depends on sample b alone;
- nothing between the layers mixes rows or touches a weight outside its layer's call.

The last two cannot be read off the module tree: a custom ``forward`` may subtract the
batch mean or reuse ``self.head.weight``. So the forward is traced symbolically
(``torch.fx``, no data) and the graph must hold only the input, calls of ``nn.Linear``
and of row-wise modules (activations, dropout, ``nn.Flatten(1)``), and one-tensor
elementwise functions and methods (``torch.relu(h)``, ``h.tanh()``). That covers an
``nn.Sequential`` of Linear, ReLU and Dropout and the built-in MLP (whose forward loops
over an ``nn.ModuleList``), whatever their classes; anything else (a forward that fx cannot
trace, a residual sum, a reshape) is not a stack and takes the general vmap path.
Whether inputs are (batch, features) is known only with data: the fast path checks each
layer's input when it runs.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

# Parameter-free modules whose output row b depends only on input row b, elementwise
# (Dropout: identity in eval mode; Network's masks multiply it elementwise per row).
ROW_WISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Tanhshrink, nn.Identity, nn.Dropout,
)
_ELEMENTWISE_FUNCTIONS = frozenset({
    torch.relu, torch.tanh, torch.sigmoid, F.relu, F.relu6, F.leaky_relu, F.elu, F.selu,
    F.celu, F.gelu, F.silu, F.mish, F.softplus, F.softsign, F.hardtanh, F.hardswish,
    F.hardsigmoid, F.tanhshrink, F.dropout, operator.neg,
})
_ELEMENTWISE_METHODS = frozenset({"relu", "tanh", "sigmoid", "neg", "contiguous"})


@dataclass(frozen=True)
class LinearStack:
    """A model's Linear layers in call order; ``input_layer`` is the one that reads the
    model's input unchanged (None when something row-wise comes first)."""

    layers: tuple[nn.Linear, ...]
    input_layer: nn.Linear | None


# What tracing found, by module structure (see ``_structure``): (layer names in call order,
# the input layer's name) or None. Every member of a model is a fresh instance of the same
# structure, and tracing one costs milliseconds, a few percent of a small MLP member's
# serving; so it is traced once per structure.
_FOUND: dict[tuple, tuple[tuple[str, ...], str | None] | None] = {}
_PLAIN = (bool, int, float, str, type(None))
_MODULE_STATE = frozenset(vars(nn.Module()))  # nn.Module's own bookkeeping (hooks, children...)


def linear_stack(module: nn.Module) -> LinearStack | None:
    """``module``'s LinearStack if its traced forward is one (see module docstring)."""
    modules = dict(module.named_modules())
    leaves = [m for m in modules.values() if not any(True for _ in m.children())]
    if not all(isinstance(m, nn.Linear) or _row_wise_module(m) for m in leaves):
        return None  # a convolution, an embedding, a norm...: no need to trace
    key = _structure(modules)
    found = _FOUND[key] if key in _FOUND else _trace(module)
    if key is not None:
        _FOUND[key] = found
    if found is None:
        return None
    names, input_name = found
    return LinearStack(tuple(modules[n] for n in names),
                       None if input_name is None else modules[input_name])


def _structure(modules: dict[str, nn.Module]) -> tuple | None:
    """What a forward can branch on: each module's class and own attributes (None, so
    no caching, when an attribute is not a plain value)."""
    key = []
    for name, m in modules.items():
        attrs = tuple(sorted((k, v) for k, v in vars(m).items() if k not in _MODULE_STATE))
        if not all(isinstance(v, _PLAIN) for _, v in attrs):
            return None
        key.append((name, type(m), attrs))
    return tuple(key)


def _row_wise_module(m: nn.Module) -> bool:
    if isinstance(m, nn.Flatten):  # (batch, ...) -> (batch, features)
        return m.start_dim == 1 and m.end_dim == -1
    # In place (ReLU(inplace=True)): it overwrites the layer output the fast path keeps.
    return isinstance(m, ROW_WISE_MODULES) and not getattr(m, "inplace", False)


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    return [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]


def _trace(module: nn.Module) -> tuple[tuple[str, ...], str | None] | None:
    """(Linear layer names in call order, the input layer's name) if the traced forward
    is a stack, else None."""
    try:
        graph = fx.Tracer().trace(module)
    except Exception:  # any forward fx cannot follow (data-dependent control flow...)
        return None
    modules = dict(module.named_modules())
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None
    layers: list[str] = []
    input_layer = None
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        # every op reads exactly one tensor (no sums of branches, no weights read by name)
        if node.op == "get_attr" or len(_tensor_args(node)) != 1:
            return None
        if node.op == "call_module":
            m = modules.get(node.target)
            if isinstance(m, nn.Linear):
                if node.target in layers:
                    return None
                layers.append(node.target)
                if _tensor_args(node)[0] is placeholders[0]:
                    input_layer = node.target
            elif m is None or not _row_wise_module(m):
                return None
        elif node.op == "call_function":
            if node.target not in _ELEMENTWISE_FUNCTIONS or node.kwargs.get("inplace"):
                return None
        elif node.op == "call_method":
            if node.target not in _ELEMENTWISE_METHODS:
                return None
        else:
            return None
    if not layers:
        return None
    return tuple(layers), input_layer
