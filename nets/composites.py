"""Composites: which rule explains which layer, and a registry of named presets.

A ``Composite`` assigns a rule to every node (layer) of a model, in this order of precedence:

1. ``name_map``  - node name -> rule;
2. ``index_map`` - node index (in the original model's topological order, negative counts from the
   end) -> rule;
3. ``first_map`` - the *first layers* whose type matches get this rule (e.g. Flat on the first
   dense/conv layer): every matching node that reads the graph input, directly or through nodes of
   other types only (in a chain: the first matching layer in execution order);
4. ``layer_map`` - (layer types, rule) pairs, first match wins; types are classes or kind strings;
5. the base map shared by every composite: activations, ``Clip``, ``LRN``, dropout, identity and the
   structural layers (flatten, reshape, transpose, pad, concat) ``Pass``; batch norm and ``Scale``
   ``Pass`` (as zennit does for a batch norm the canonizer could not fold); residual ``Add`` and
   average pooling ``Norm`` (zennit's ``Sum`` and ``AvgPool`` rule); max pooling
   ``WinnerTakesAll``; any other linear layer ``Epsilon``.

The presets reproduce zennit's composites of the same names (default epsilon and stabiliser 1e-6;
"first layer" as in point 3):

================================  =================================================================
``epsilon_plus``                   conv ZPlus, dense Epsilon
``epsilon_plus_flat``              as epsilon_plus, the first dense-or-conv layer Flat
``epsilon_alpha2_beta1``           conv AlphaBeta(2, 1), dense Epsilon
``epsilon_alpha2_beta1_flat``      as epsilon_alpha2_beta1, the first dense-or-conv layer Flat
``epsilon_gamma_box(low, high)``   first conv ZBox(low, high), other conv Gamma(0.25), dense Epsilon
================================  =================================================================

``epsilon_gamma_box`` without ``low``/``high`` takes the box from the model's ``input_range`` (the
data it was trained on) when known, else from each batch's observed input range, and warns which.
The box bounds the first layers' *own* input: when a ``Scale`` (input standardisation) or ``Pad``
node precedes them, give the bounds in that space (or None, the observed range).
"""

from __future__ import annotations

from nets.layers import (
    LRN,
    Add,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Clip,
    Concat,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    GlobalMaxPool2D,
    Identity,
    LeakyReLU,
    MaxPool2D,
    Pad,
    ReLU,
    Reshape,
    Scale,
    Sigmoid,
    Tanh,
    Transpose,
)
from nets.propagation import check_rule_for_layer
from nets.rules import (
    DEFAULT_EPSILON,
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Norm,
    Pass,
    Rule,
    WinnerTakesAll,
    ZBox,
    ZPlus,
)

__all__ = [
    "Composite",
    "COMPOSITES",
    "register_composite",
    "get_composite",
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
    "epsilon_gamma_box",
]

_ACTIVATIONS = (ReLU, LeakyReLU, Tanh, Sigmoid, Clip)
_STRUCTURAL = (Flatten, Reshape, Transpose, Pad, Concat, Dropout, Identity)


def _base_map(stabilizer=DEFAULT_EPSILON):
    return [
        (_ACTIVATIONS + _STRUCTURAL + (LRN,), Pass()),
        ((BatchNorm1D, BatchNorm2D, Scale), Pass()),
        ((Add, AvgPool2D, GlobalAvgPool2D), Norm(stabilizer)),
        ((MaxPool2D, GlobalMaxPool2D), WinnerTakesAll()),
        ((Dense, Conv2D), Epsilon(DEFAULT_EPSILON)),
    ]


def _matches(layer, types):
    if not isinstance(types, (tuple, list)):
        types = (types,)
    for t in types:
        if isinstance(t, str):
            if layer.kind.lower() == t.lower():
                return True
        elif isinstance(layer, t):
            return True
    return False


class Composite:
    """Rules by layer name, index, first layer and type (see the module docstring for precedence).

    Parameters
    ----------
    layer_map : list of (types, Rule), optional
        ``types`` is a layer class, a kind string (``"Conv2D"``) or a tuple of them.
    index_map : dict int -> Rule, optional
    name_map : dict str -> Rule, optional
    first_map : list of (types, Rule), optional
        Applied to every first layer (see the module docstring) matching one of the types.
    stabilizer : float or callable, default 1e-6
        Stabiliser of the base map's ``Norm`` on average pooling.

    Examples
    --------
    >>> import numpy as np
    >>> import nets
    >>> from nets.composites import Composite
    >>> from nets.rules import Epsilon, ZPlus
    >>> model = nets.Sequential([nets.Dense(np.ones((3, 2))), nets.ReLU(), nets.Dense(np.ones((1, 3)))])
    >>> Composite(layer_map=[(nets.Dense, ZPlus())], index_map={-1: Epsilon(0.0)}).resolve(model)
    [ZPlus(stabilizer=1e-06, zero_bias=False), Pass(), Epsilon(epsilon=0.0, zero_bias=False)]
    """

    def __init__(
        self, layer_map=None, index_map=None, name_map=None, first_map=None, stabilizer=DEFAULT_EPSILON
    ):
        self.layer_map = list(layer_map or [])
        self.index_map = dict(index_map or {})
        self.name_map = dict(name_map or {})
        self.first_map = list(first_map or [])
        self.stabilizer = stabilizer
        for where, pairs in (("layer_map", self.layer_map), ("first_map", self.first_map)):
            for pair in pairs:
                if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[1], Rule)):
                    raise TypeError(f"{where} entries must be (layer types, Rule) pairs, got {pair!r}")
        for where, mapping in (("index_map", self.index_map), ("name_map", self.name_map)):
            for key, rule in mapping.items():
                if not isinstance(rule, Rule):
                    raise TypeError(f"{where}[{key!r}] must be a Rule, got {type(rule).__name__}")

    def resolve(self, model, origin=None, original=None):
        """One rule per layer of ``model``.

        Index and name maps refer to the user's ``original`` model (default ``model``); ``origin[j]``
        is the index in it of layer ``j`` of ``model`` (the canonizer folds layers away); default
        ``range(len(model))``.
        """
        original = model if original is None else original
        n_orig = len(original)
        origin = list(range(len(model))) if origin is None else list(origin)
        index_map = {}
        for key, rule in self.index_map.items():
            k = int(key)
            if not -n_orig <= k < n_orig:
                raise IndexError(f"index_map refers to layer {k}, the model has {n_orig} layers")
            index_map[k % n_orig] = rule
        unknown = set(self.name_map) - set(original.names)
        if unknown:
            raise KeyError(f"name_map refers to unknown layers {sorted(unknown)}; layers: {original.names}")
        first = _first_layers(model, self.first_map)
        rules = []
        for j, (name, layer) in enumerate(zip(model.names, model.layers)):
            rule = None
            if name in self.name_map:
                rule = self.name_map[name]
            elif origin[j] in index_map:
                rule = index_map[origin[j]]
            if rule is None and j in first:
                rule = first[j]
            if rule is None:
                for types, map_rule in self.layer_map + _base_map(self.stabilizer):
                    if _matches(layer, types):
                        rule = map_rule
                        break
            if rule is None:
                raise TypeError(f"no rule for layer {name!r} ({layer.kind}); add it to a composite map")
            check_rule_for_layer(rule, layer, where=f"layer {name!r}: ")
            rules.append(rule)
        return rules

    def __repr__(self):
        parts = []
        for key in ("layer_map", "index_map", "name_map", "first_map"):
            value = getattr(self, key)
            if value:
                parts.append(f"{key}={value!r}")
        return f"Composite({', '.join(parts)})"


def _first_layers(model, first_map):
    """{node index: rule} for the first layers: nodes matching a first_map type that the graph
    input reaches through nodes matching none of them (a chain: the first matching layer)."""

    def match(layer):
        for types, rule in first_map:
            if _matches(layer, types):
                return rule
        return None

    out = {}
    clear = [True]  # per position of trace's list: reached from the input without a match
    for j, layer in enumerate(model.layers):
        reached = any(clear[k] for k in model.sources[j])
        rule = match(layer) if first_map else None
        if reached and rule is not None:
            out[j] = rule
        clear.append(reached and rule is None)
    return out


def epsilon_plus(epsilon=DEFAULT_EPSILON, stabilizer=DEFAULT_EPSILON, zero_bias=False):
    """conv ZPlus, dense Epsilon (zennit's EpsilonPlus)."""
    return Composite(
        layer_map=[(Conv2D, ZPlus(stabilizer, zero_bias)), (Dense, Epsilon(epsilon, zero_bias))],
        stabilizer=stabilizer,
    )


def epsilon_plus_flat(epsilon=DEFAULT_EPSILON, stabilizer=DEFAULT_EPSILON, zero_bias=False):
    """epsilon_plus with Flat on the first dense or conv layer (zennit's EpsilonPlusFlat)."""
    comp = epsilon_plus(epsilon, stabilizer, zero_bias)
    comp.first_map = [((Dense, Conv2D), Flat(stabilizer, zero_bias))]
    return comp


def epsilon_alpha2_beta1(epsilon=DEFAULT_EPSILON, stabilizer=DEFAULT_EPSILON, zero_bias=False):
    """conv AlphaBeta(2, 1), dense Epsilon (zennit's EpsilonAlpha2Beta1)."""
    return Composite(
        layer_map=[(Conv2D, AlphaBeta(2, 1, stabilizer, zero_bias)), (Dense, Epsilon(epsilon, zero_bias))],
        stabilizer=stabilizer,
    )


def epsilon_alpha2_beta1_flat(epsilon=DEFAULT_EPSILON, stabilizer=DEFAULT_EPSILON, zero_bias=False):
    """epsilon_alpha2_beta1 with Flat on the first dense or conv layer."""
    comp = epsilon_alpha2_beta1(epsilon, stabilizer, zero_bias)
    comp.first_map = [((Dense, Conv2D), Flat(stabilizer, zero_bias))]
    return comp


def epsilon_gamma_box(
    low=None, high=None, epsilon=DEFAULT_EPSILON, gamma=0.25, stabilizer=DEFAULT_EPSILON, zero_bias=False
):
    """First conv ZBox(low, high), other conv Gamma(gamma), dense Epsilon (zennit's EpsilonGammaBox).

    As in zennit only a convolution counts as the first layer here: a model without convolutions
    gets Epsilon on every dense layer. ``low``/``high`` None: the observed range of each batch
    (``nets.LRP`` fills them from the model's ``input_range`` first, when known).
    """
    return Composite(
        layer_map=[(Conv2D, Gamma(gamma, stabilizer, zero_bias)), (Dense, Epsilon(epsilon, zero_bias))],
        first_map=[((Conv2D,), ZBox(low, high, stabilizer, zero_bias))],
        stabilizer=stabilizer,
    )


#: registry of named preset factories (name -> callable returning a Composite)
COMPOSITES = {
    "epsilon_plus": epsilon_plus,
    "epsilon_plus_flat": epsilon_plus_flat,
    "epsilon_alpha2_beta1": epsilon_alpha2_beta1,
    "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat,
    "epsilon_gamma_box": epsilon_gamma_box,
}


def register_composite(name, factory):
    """Add a preset: ``factory(**kwargs)`` must return a Composite."""
    if not callable(factory):
        raise TypeError("factory must be callable")
    COMPOSITES[str(name)] = factory
    return factory


def get_composite(composite=None, **kwargs):
    """A Composite from a preset name (with its keyword arguments), a Composite, or None (epsilon
    everywhere, the base map only).

    Examples
    --------
    >>> from nets.composites import get_composite
    >>> get_composite("epsilon_gamma_box", low=0.0, high=1.0).first_map[0][1]
    ZBox(low=0.0, high=1.0, stabilizer=1e-06, zero_bias=False)
    """
    if composite is None:
        return Composite(**kwargs)
    if isinstance(composite, Composite):
        if kwargs:
            raise TypeError("keyword arguments only apply to preset names")
        return composite
    if isinstance(composite, str):
        try:
            factory = COMPOSITES[composite]
        except KeyError:
            raise ValueError(f"unknown composite {composite!r}; presets: {sorted(COMPOSITES)}") from None
        try:
            return factory(**kwargs)
        except TypeError as err:
            raise TypeError(f"composite {composite!r}: {err}") from None
    raise TypeError(f"composite must be a preset name or a Composite, got {type(composite).__name__}")
