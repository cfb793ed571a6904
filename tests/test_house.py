"""The house: no import cycles, files a reader can hold, the model-family registry, hook names by layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from paper_lib.core import hooks
from paper_lib.core.registry import REGISTRY, ModelSpec, Registry, RegistryError

PACKAGE = Path(__file__).resolve().parent.parent / "paper_lib"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _import_graph() -> dict[str, set[str]]:
    """Edges module -> paper_lib module it imports, at any depth (lazy imports inside functions count too)."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # `from pkg import sub` imports the submodule when there is one, else a name from pkg
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_package_has_no_import_cycle():
    graph = _import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert len(graph) > 20 and graph["paper_lib.matching.pairs"]  # the walk saw the package


def test_cycle_detector_sees_lazy_imports(tmp_path, monkeypatch):
    """The walk counts an import inside a function: a cycle hidden that way would still be reported."""
    source = (PACKAGE / "core" / "hooks.py").read_text()
    assert "from ..data import" not in source  # core depends on nothing above it
    graph = _import_graph()
    assert "paper_lib.models" in graph["paper_lib.saes.store"]  # a module-level import of a package
    assert not any(m.startswith(("paper_lib.data", "paper_lib.models")) for m in graph["paper_lib.core.config"])


def test_every_module_is_short_and_says_its_role():
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 450, f"{path} has {len(text.splitlines())} lines"
        doc = ast.get_docstring(ast.parse(text))
        assert doc and doc.strip(), f"{name} has no module docstring"


def test_paper_family_is_derived_from_the_registry():
    assert REGISTRY.names == ("babypython", "lua", "tinystories", "luastories")
    assert REGISTRY.labels == {"babypython": "BabyPython", "lua": "Lua", "tinystories": "TinyStories",
                               "luastories": "LuaStories"}
    # The SAEs' data: the model's own plus its ancestors' (PAPER.md), in the order the mixtures are built.
    assert REGISTRY.sae_domains("babypython") == ("babylm", "python")
    assert REGISTRY.sae_domains("lua") == ("babylm", "python", "lua")
    assert REGISTRY.sae_domains("tinystories") == ("babylm", "python", "tinystories")
    assert REGISTRY.sae_domains("luastories") == ("babylm", "python", "lua", "tinystories")
    assert REGISTRY.edges() == [("babypython", "lua"), ("babypython", "tinystories"), ("lua", "luastories"),
                                ("tinystories", "luastories")]
    assert REGISTRY.routes_from("babypython") == {"lua": ["babypython", "lua"],
                                                  "tinystories": ["babypython", "tinystories"],
                                                  "luastories": ["babypython", "lua", "luastories"]}
    assert REGISTRY.flow_layout() == {"babypython": (0.0, 0.5), "lua": (1.0, 0.78), "tinystories": (1.0, 0.22),
                                      "luastories": (2.0, 0.5)}


def test_adding_a_model_is_one_entry():
    deeper = Registry([
        *(REGISTRY.spec(n) for n in REGISTRY.names),
        ModelSpec("babypython4", "BabyPython-4L", "pretrain", domains=("babylm", "python"),
                  architecture={"num_hidden_layers": 4}),
        ModelSpec("lua4", "Lua-4L", "finetune", parents=("babypython4",), domains=("lua",)),
    ])
    assert ("babypython4", "lua4") in deeper.edges() and len(deeper.edges()) == 5
    assert deeper.sae_domains("lua4") == ("babylm", "python", "lua")
    assert deeper.architecture("lua4") == {"num_hidden_layers": 4}  # a fine-tune keeps its parent's shape
    assert deeper.routes_from("babypython4") == {"lua4": ["babypython4", "lua4"]}
    assert deeper.flow_layout(["babypython4", "lua4"]) == {"babypython4": (0.0, 0.5), "lua4": (1.0, 0.5)}


@pytest.mark.parametrize(
    "specs, fragment",
    [
        ([ModelSpec("a", "A", "pretrain", domains=("python",)), ModelSpec("a", "A", "pretrain", domains=("lua",))],
         "registered twice"),
        ([ModelSpec("b", "B", "finetune", parents=("a",), domains=("lua",))], "must be registered before"),
    ],
)
def test_registry_rejects_bad_entries(specs, fragment):
    with pytest.raises(RegistryError, match=fragment):
        Registry(specs)
    with pytest.raises(RegistryError, match="1 parent"):
        ModelSpec("c", "C", "finetune", domains=("lua",))
    with pytest.raises(RegistryError, match="unknown domain"):
        ModelSpec("d", "D", "pretrain", domains=("klingon",))
    with pytest.raises(RegistryError, match="unknown model 'gpt2'"):
        REGISTRY.spec("gpt2")


def test_hook_names_by_layer():
    assert hooks.hook_name(3, "hook_resid_post") == "blocks.3.hook_resid_post"
    assert hooks.parse_hook("blocks.0.mlp.hook_post") == (0, "mlp.hook_post")
    assert hooks.stop_layer("blocks.2.hook_resid_post") == 3
    cfg = type("TL", (), {"n_layers": 2, "d_mlp": 128, "d_model": 64})()
    assert hooks.hook_width("blocks.1.mlp.hook_post", cfg) == 128
    assert hooks.hook_width("blocks.0.hook_resid_post", cfg) == 64
    with pytest.raises(hooks.HookError, match="2 layer"):
        hooks.hook_width("blocks.2.hook_resid_post", cfg)
    for bad in ("blocks.x.mlp.hook_post", "mlp.hook_post", "blocks.0.mlp.hook_banana"):
        with pytest.raises(hooks.HookError, match="blocks.<layer>.<point>"):
            hooks.parse_hook(bad)
