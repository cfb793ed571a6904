"""The model family: every model's name, label, parents, how it is made, its data and its SAE's data.

One entry per model (``ModelSpec``). Everything that used to be spelled out per model is derived from these
entries: the SAE's training mixture (the model's own data plus its ancestors'), the matching pairs (every
parent -> child edge), the routes a case-study feature is followed along, and the flow figure's layout.
Adding a model (a deeper or wider member for later sections) is one entry here and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DOMAINS = ("babylm", "python", "lua", "tinystories")
Recipe = Literal["pretrain", "finetune", "merge", "init"]


class RegistryError(ValueError):
    """An unknown model name or an inconsistent registry entry."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the family.

    ``recipe``: ``pretrain`` (trained from scratch on ``domains`` evenly by tokens with ``cfg.pretrain``),
    ``finetune`` (its one parent trained further on ``domains`` with ``cfg.finetune``) or ``merge`` (its two
    parents merged with ``cfg.merge``; ``parents[0]`` is mergekit's ``base_model``, at t = 0) or ``init``
    (the architecture at initialisation, seeded apart from every trained model: it has learned nothing).
    ``control``: a model outside the family (the matching null), left out of ``names``, ``edges`` and every
    other family listing; its ``domains`` are its SAE's data.
    ``architecture``: overrides of ``cfg.model`` (e.g. ``{"num_hidden_layers": 4}`` for a deeper member);
    a fine-tune or merge inherits its parents' shape.
    ``family``: the models a section compares. ``paper`` (the paper's four models) is what ``names``, the
    matching pairs, the flow figure and the case studies read; another family (the deeper ``layerwise`` one of
    notebook 09, the ``stitching`` one of notebook 10) is listed by ``family`` and reaches those only where a
    caller names it.
    """

    name: str
    label: str
    recipe: Recipe
    parents: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    architecture: dict = field(default_factory=dict)
    control: bool = False
    family: str = "paper"

    def __post_init__(self):
        expected = {"pretrain": 0, "finetune": 1, "merge": 2, "init": 0}[self.recipe]
        if len(self.parents) != expected:
            raise RegistryError(f"model '{self.name}': a {self.recipe} has {expected} parent(s), got {self.parents}")
        if self.recipe != "merge" and not self.domains:
            raise RegistryError(f"model '{self.name}': a {self.recipe} needs the domains it is trained on")
        unknown = [d for d in self.domains if d not in DOMAINS]
        if unknown:
            raise RegistryError(f"model '{self.name}': unknown domain(s) {unknown}; domains are {DOMAINS}")


class Registry:
    """An ordered set of ``ModelSpec`` (parents before children) with the relations derived from it."""

    def __init__(self, specs: list[ModelSpec] | tuple[ModelSpec, ...]):
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise RegistryError(f"model '{spec.name}' is registered twice")
            missing = [p for p in spec.parents if p not in self._specs]
            if missing:
                raise RegistryError(f"model '{spec.name}': parent(s) {missing} must be registered before it")
            other = [p for p in spec.parents if self._specs[p].family != spec.family]
            if other:
                raise RegistryError(f"model '{spec.name}' (family {spec.family}): parent(s) {other} are of another family")
            self._specs[spec.name] = spec

    @property
    def names(self) -> tuple[str, ...]:
        """The paper family's model names in registry order (parents first); controls are left out."""
        return self._members("paper")

    def _members(self, family: str) -> tuple[str, ...]:
        return tuple(n for n, s in self._specs.items() if not s.control and s.family == family)

    def family(self, family: str) -> tuple[str, ...]:
        """The model names of one family in registry order (parents first); controls are left out."""
        found = self._members(family)
        if not found:
            known = sorted({s.family for s in self._specs.values()})
            raise RegistryError(f"unknown family '{family}'; families are {', '.join(known)}")
        return found

    @property
    def controls(self) -> tuple[str, ...]:
        """Control models (outside the family: the matching null)."""
        return tuple(n for n, s in self._specs.items() if s.control)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __getitem__(self, name: str) -> ModelSpec:
        return self.spec(name)

    def spec(self, name: str) -> ModelSpec:
        """The entry of one model, with an error naming the known models."""
        if name not in self._specs:
            raise RegistryError(f"unknown model '{name}'; models are {', '.join(self._specs)}")
        return self._specs[name]

    def label(self, name: str) -> str:
        """The model's display name (e.g. ``BabyPython``)."""
        return self.spec(name).label

    @property
    def labels(self) -> dict[str, str]:
        """``{name: label}`` of the paper family's models (``label`` names any model)."""
        return {n: self._specs[n].label for n in self.names}

    def ancestors(self, name: str) -> list[str]:
        """All ancestors, nearest first along ``parents[0]``, each once (depth-first over parents in order)."""
        seen: list[str] = []

        def visit(model: str) -> None:
            for parent in self.spec(model).parents:
                if parent not in seen:
                    seen.append(parent)
                    visit(parent)

        visit(name)
        return seen

    def root(self, name: str) -> str:
        """The pretrained model a model descends from (following ``parents[0]``)."""
        while self.spec(name).parents:
            name = self.spec(name).parents[0]
        return name

    def architecture(self, name: str) -> dict:
        """``cfg.model`` overrides of a model: its own, or those of the model it descends from."""
        return dict(self.spec(self.root(name)).architecture)

    def sae_domains(self, name: str) -> tuple[str, ...]:
        """The SAE's training mixture: the model's own data plus its ancestors', ancestors' data first.

        Order matters (it fixes the mixture's shuffle): the depth-first walk over ``parents`` in order, each
        model's domains after those of its parents, each domain once.
        """
        ordered: list[str] = []

        def visit(model: str) -> None:
            for parent in self.spec(model).parents:
                visit(parent)
            for domain in self.spec(model).domains:
                if domain not in ordered:
                    ordered.append(domain)

        visit(name)
        return tuple(ordered)

    def data_domains(self, name: str) -> tuple[str, ...]:
        """The text a model was made for: its own domains, or a merge's parents' (each domain once, in order)."""
        spec = self.spec(name)
        if spec.recipe != "merge":
            return spec.domains
        return tuple(dict.fromkeys(d for p in spec.parents for d in self.data_domains(p)))

    def pair_domains(self, parent: str, child: str) -> tuple[str, ...]:
        """A matching pair's text: both models' ``data_domains``, in ``DOMAINS`` order (so the pairs Lua ->
        LuaStories and TinyStories -> LuaStories share one sample)."""
        both = {*self.data_domains(parent), *self.data_domains(child)}
        return tuple(d for d in DOMAINS if d in both)

    def edges(self, names: tuple[str, ...] | list[str] | None = None) -> list[tuple[str, str]]:
        """Every (parent, child) pair, in registry order: the matching pairs of Figure 2."""
        keep = set(self.names if names is None else names)
        members = [n for n, s in self._specs.items() if not s.control]
        return [(p, n) for n in members if n in keep for p in self._specs[n].parents if p in keep]

    def route(self, name: str) -> list[str]:
        """The path from the root to a model along ``parents[0]`` (a merge is reached through its base model)."""
        path = [name]
        while self.spec(path[0]).parents:
            path.insert(0, self.spec(path[0]).parents[0])
        return path

    def routes_from(self, root: str) -> dict[str, list[str]]:
        """``{model: route}`` of every model descending from ``root`` (the case studies follow these)."""
        family = self.family(self.spec(root).family)
        return {n: self.route(n) for n in family if n != root and self.route(n)[0] == root}

    def depth(self, name: str) -> int:
        """Generations below the root (the longest path through any parent)."""
        parents = self.spec(name).parents
        return 0 if not parents else 1 + max(self.depth(p) for p in parents)

    def flow_layout(self, names: tuple[str, ...] | list[str] | None = None) -> dict[str, tuple[float, float]]:
        """(x, y) of each model in the flow figure: x = generation, models of one generation spread over y."""
        names = list(self.names if names is None else names)
        by_depth: dict[int, list[str]] = {}
        for name in names:
            by_depth.setdefault(self.depth(name), []).append(name)
        layout = {}
        for depth, group in by_depth.items():
            gap = min(0.56, 0.9 / max(len(group) - 1, 1))
            top = 0.5 + gap * (len(group) - 1) / 2
            for i, name in enumerate(group):
                layout[name] = (float(depth), round(top - i * gap, 6))
        return layout


# The paper's family (PAPER.md, Figure 1). LuaStories merges Lua (mergekit's base_model, t = 0) and TinyStories.
PAPER_FAMILY = (
    ModelSpec("babypython", "BabyPython", "pretrain", domains=("babylm", "python")),
    ModelSpec("lua", "Lua", "finetune", parents=("babypython",), domains=("lua",)),
    ModelSpec("tinystories", "TinyStories", "finetune", parents=("babypython",), domains=("tinystories",)),
    ModelSpec("luastories", "LuaStories", "merge", parents=("lua", "tinystories")),
)

# The matching null: the family's architecture at initialisation. Its SAE (trained on every domain, like the
# merge's) gives the floor that a persistence share is read against (notebook 05).
NULL_MODEL = "untrained"
CONTROLS = (ModelSpec(NULL_MODEL, "Untrained", "init", domains=DOMAINS, control=True),)

# The deeper family of notebook 09 (layer-wise evolution): BabyPython with more layers, trained on the same data
# and tokenizer by the same code, and its two fine-tunes. The registry gives it 4 layers of the profile's width;
# a profile reshapes it through `layerwise.architecture` (the cpu profile narrows it to train in minutes).
LAYERWISE_FAMILY = (
    ModelSpec("babypython_deep", "BabyPython (deep)", "pretrain", domains=("babylm", "python"),
              architecture={"num_hidden_layers": 4}, family="layerwise"),
    ModelSpec("lua_deep", "Lua (deep)", "finetune", parents=("babypython_deep",), domains=("lua",),
              family="layerwise"),
    ModelSpec("tinystories_deep", "TinyStories (deep)", "finetune", parents=("babypython_deep",),
              domains=("tinystories",), family="layerwise"),
)

# The small model of notebook 10 (model stitching): BabyPython with 2 layers, on the same data and tokenizer, that
# the deeper family's base is mapped to and from; a profile reshapes it through `stitching.architecture` (half the
# deeper base's width, so the large model is twice as wide and deeper).
STITCHING_FAMILY = (
    ModelSpec("babypython_small", "BabyPython (small)", "pretrain", domains=("babylm", "python"),
              architecture={"num_hidden_layers": 2}, family="stitching"),
)

REGISTRY = Registry(PAPER_FAMILY + CONTROLS + LAYERWISE_FAMILY + STITCHING_FAMILY)
MODEL_NAMES = REGISTRY.names
MODEL_LABELS = REGISTRY.labels
