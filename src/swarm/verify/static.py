"""The static check of a train.py: refuse code that reaches into the metric's machinery.

A train.py is the only thing an agent edits, and everything it prints is untrusted; the
metric is trusted only because ``prepare.evaluate_bpb`` computes it and reports it to the
runner over a file descriptor the runner owns. :func:`check_train_py` reads the syntax tree
(never the text, so formatting, comments and string tricks do not matter) and returns a
:class:`Finding` for each construct that could let the code tamper with that path:

- rebinding a name imported from ``prepare`` (or ``prepare`` itself), writing an attribute
  of ``prepare``, of any imported module or of anything imported from one (``math.log =``,
  ``torch.Tensor.sum =``; ``torch.backends``/compiler config stay writable), ``print`` or
  ``sys.stdout`` replaced;
- the escape hatches of the language: ``exec``/``eval``/``compile``/``__import__``,
  ``globals()``/``locals()``/``vars()``, ``__builtins__``, ``setattr``/``delattr``,
  ``getattr`` with a computed name, dunder attributes such as ``__globals__``/``__code__``,
  frame objects, ``__torch_function__``/``__torch_dispatch__`` overrides;
- modules that load or run foreign code or raw memory (``ctypes``, ``importlib``,
  ``builtins``, ``inspect``, ``pickle``, ``subprocess``, ``io``, ``torch.library``, ...) and
  the raw file-descriptor calls of ``os`` (``write``, ``dup2``, ``fdopen``, ``open``, ...);
- file access that could reach a descriptor: ``open`` with anything but a literal path read
  only, strings naming ``/proc``, ``/dev/`` or the metric descriptor's variable;
- a module used as a value (``o = os``), which would hide every later attribute from the
  check, and changes to ``sys.path`` beyond the one line that puts prepare.py on it.

This raises the cost of cheating by code; it is not a proof of honesty (Python is too
dynamic for that). Replication of every candidate best by another agent is what catches a
host that lies.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Finding", "check_train_py"]

PREPARE = "prepare"

#: modules (and their submodules) a train.py may not import at all
FORBIDDEN_MODULES: frozenset[str] = frozenset(
    {
        "builtins",
        "ctypes",
        "_ctypes",
        "cffi",
        "importlib",
        "inspect",
        "marshal",
        "pickle",
        "_pickle",
        "dill",
        "cloudpickle",
        "types",
        "code",
        "codeop",
        "runpy",
        "subprocess",
        "multiprocessing",
        "pty",
        "fcntl",
        "mmap",
        "posix",
        "nt",
        "io",
        "_io",
        "socket",
        "signal",
        "atexit",
        "sysconfig",
        "site",
        "zipimport",
        "pkgutil",
        "_thread",
        "torch.library",
        "torch.overrides",
        "torch.utils.cpp_extension",
        "torch.utils._python_dispatch",
        "numpy.ctypeslib",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
    }
)

#: dotted names (after resolving import aliases) a train.py may not touch
FORBIDDEN_NAMES: frozenset[str] = frozenset(
    {
        "os.write",
        "os.writev",
        "os.pwrite",
        "os.pwritev",
        "os.open",
        "os.fdopen",
        "os.dup",
        "os.dup2",
        "os.pipe",
        "os.pipe2",
        "os.sendfile",
        "os.system",
        "os.popen",
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.posix_spawnp",
        "os.kill",
        "os.killpg",
        "os.putenv",
        "os.unsetenv",
        "os.openpty",
        "os.truncate",
        "os.ftruncate",
        "os.replace",
        "os.rename",
        "os.remove",
        "os.unlink",
        "os.symlink",
        "os.link",
        "os.sys",
        "os.execv",
        "os.execve",
        "os.execl",
        "os.execle",
        "os.execlp",
        "os.execlpe",
        "os.execvp",
        "os.execvpe",
        "os.spawnl",
        "os.spawnle",
        "os.spawnlp",
        "os.spawnlpe",
        "os.spawnv",
        "os.spawnve",
        "os.spawnvp",
        "os.spawnvpe",
        "os.memfd_create",
        "os.environb",
        "sys.modules",
        "sys._getframe",
        "sys.settrace",
        "sys.setprofile",
        "sys.addaudithook",
        "sys.meta_path",
        "sys.path_hooks",
        "sys.path_importer_cache",
        "sys.displayhook",
        "sys.excepthook",
        "sys.__stdout__",
        "sys.__stderr__",
        "sys.monitoring",
        "torch.load",
        "torch.ops.load_library",
        "torch.classes.load_library",
        "numpy.load",
        "torch.utils.cpp_extension",
        "torch.library",
        "torch.overrides",
    }
)

#: names of the language's escape hatches, refused wherever they appear
FORBIDDEN_BUILTINS: frozenset[str] = frozenset(
    {
        "exec",
        "eval",
        "compile",
        "__import__",
        "globals",
        "locals",
        "vars",
        "__builtins__",
        "__loader__",
        "__spec__",
        "breakpoint",
        "setattr",
        "delattr",
    }
)

#: attribute names refused on any object (frames, code, namespaces)
FORBIDDEN_ATTRS: frozenset[str] = frozenset(
    {
        "f_globals",
        "f_locals",
        "f_back",
        "f_builtins",
        "f_code",
        "gi_frame",
        "cr_frame",
        "ag_frame",
        "tb_frame",
        "co_code",
        "write_text",
        "write_bytes",
        "fdopen",
        "dup2",
        "load_library",
        "_getframe",
    }
)

#: dunder attributes a train.py may use (everything else with two underscores is refused)
ALLOWED_DUNDERS: frozenset[str] = frozenset(
    {
        "__init__",
        "__name__",
        "__qualname__",
        "__doc__",
        "__class__",
        "__call__",
        "__len__",
        "__iter__",
        "__next__",
        "__enter__",
        "__exit__",
        "__repr__",
        "__str__",
        "__file__",
    }
)

#: method names of a class body that would hijack tensor operations inside evaluate_bpb
FORBIDDEN_METHODS: frozenset[str] = frozenset({"__torch_function__", "__torch_dispatch__"})

#: module attribute prefixes that a train.py may set (backend and compiler switches)
WRITABLE_PREFIXES: tuple[str, ...] = (
    "torch.backends.",
    "torch._dynamo.config.",
    "torch._inductor.config.",
    "torch._functorch.config.",
)

#: text that names a descriptor or the process's own internals
FORBIDDEN_TEXT: tuple[str, ...] = ("/proc", "/dev/", "METRIC_FD")

#: the one sys.path change a train.py may make: its own directory first (for prepare.py)
SYS_PATH_IDIOM = ast.dump(
    ast.parse("sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))", mode="eval")
)

_ENV_MUTATORS = frozenset({"setdefault", "pop", "__setitem__", "update", "clear", "popitem"})
_GETATTR = frozenset({"getattr", "hasattr"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One refused construct: where it is, which rule, and why (one line)."""

    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def check_train_py(source: str) -> list[Finding]:
    """Every construct of ``source`` that the static check refuses (empty: the code may run)."""
    try:
        tree = ast.parse(source, filename="train.py")
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None) or 0
        return [Finding(line, "syntax", f"train.py does not parse: {exc}")]
    checker = _Checker()
    checker.collect(tree)
    checker.visit(tree)
    return sorted(set(checker.findings), key=lambda f: (f.line, f.rule, f.message))


def _forbidden_module(dotted: str) -> str | None:
    for name in FORBIDDEN_MODULES | FORBIDDEN_NAMES:
        if dotted == name or dotted.startswith(name + "."):
            return name
    return None


def _is_prepare(origin: str) -> bool:
    return origin == PREPARE or origin.startswith(PREPARE + ".")


def _bound_names(target: ast.AST) -> Iterator[tuple[str, int]]:
    for node in ast.walk(target):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            yield node.id, node.lineno


class _Checker(ast.NodeVisitor):
    """Walks one module; ``aliases`` maps a local name to the dotted thing it was imported as."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.aliases: dict[str, str] = {}  # local name -> dotted origin ("os", "prepare.X")
        self.modules: set[str] = set()  # local names bound by `import X` (module objects)
        self.prepare_names: set[str] = {"print"}  # local names bound to prepare or its names
        self.parents: dict[int, ast.AST] = {}

    def add(self, node: ast.AST, rule: str, message: str) -> None:
        self.findings.append(Finding(getattr(node, "lineno", 0), rule, message))

    # ---------------------------------------------------------------- first pass: imports

    def collect(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[id(child)] = node
            if isinstance(node, ast.Import):
                for a in node.names:
                    local = a.asname or a.name.split(".")[0]
                    origin = a.name if a.asname else a.name.split(".")[0]
                    self.aliases.setdefault(local, origin)
                    self.modules.add(local)
                    if _is_prepare(origin):
                        self.prepare_names.add(local)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    if a.name != "*":
                        origin = f"{node.module}.{a.name}"
                        self.aliases.setdefault(a.asname or a.name, origin)
                        if _is_prepare(origin):
                            self.prepare_names.add(a.asname or a.name)

    def resolve(self, node: ast.AST) -> str | None:
        """``a.b.c`` with its root import alias resolved (None: not rooted at an import)."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self.aliases:
            return None
        return ".".join([self.aliases[node.id], *reversed(parts)])

    def protected(self, name: str) -> bool:
        return name in self.prepare_names

    # ---------------------------------------------------------------- imports

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            bad = _forbidden_module(a.name)
            if bad:
                self.add(node, "import", f"imports {a.name} ({bad} is not allowed in train.py)")
            self._check_rebind(a.asname or a.name.split(".")[0], node, origin=a.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            self.add(node, "import", "relative import (train.py imports by absolute name)")
        bad = _forbidden_module(module)
        if bad:
            self.add(node, "import", f"imports from {module} ({bad} is not allowed in train.py)")
        for a in node.names:
            if a.name == "*":
                self.add(node, "import", f"`from {module} import *` hides which names it binds")
                continue
            bad = _forbidden_module(f"{module}.{a.name}")
            if bad and not _forbidden_module(module):
                self.add(node, "import", f"imports {module}.{a.name} ({bad} is not allowed)")
            self._check_rebind(a.asname or a.name, node, origin=f"{module}.{a.name}")

    def _check_rebind(self, name: str, node: ast.AST, origin: str = "") -> None:
        if self.protected(name) and not (_is_prepare(origin) and origin == self.aliases.get(name)):
            self.add(node, "rebind", f"rebinds {name!r}, a name of prepare.py or print")

    # ---------------------------------------------------------------- bindings

    def _check_targets(self, targets: list[ast.expr], node: ast.AST) -> None:
        for target in targets:
            for name, _ in _bound_names(target):
                if self.protected(name):
                    self.add(node, "rebind", f"rebinds {name!r}, a name of prepare.py or print")
            for sub in ast.walk(target):
                if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store | ast.Del):
                    self._check_attr_write(sub)
                elif isinstance(sub, ast.Subscript) and isinstance(sub.ctx, ast.Store | ast.Del):
                    self._check_subscript_write(sub)

    def visit_Assign(self, node: ast.Assign) -> None:
        self._check_targets(node.targets, node)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_targets([node.target], node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_targets([node.target], node)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        self._check_targets(node.targets, node)
        self.generic_visit(node)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self._check_targets([node.target], node)
        self.generic_visit(node)

    visit_AsyncFor = visit_For

    def visit_comprehension(self, node: ast.comprehension) -> None:
        self._check_targets([node.target], node.iter)
        self.generic_visit(node)

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        self._check_targets([i.optional_vars for i in node.items if i.optional_vars], node)
        self.generic_visit(node)

    visit_AsyncWith = visit_With

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self._check_targets([node.target], node)
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._check_rebind(node.name, node)
        self.generic_visit(node)

    def _check_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self._check_rebind(node.name, node)
        if node.name in FORBIDDEN_METHODS:
            self.add(node, "override", f"defines {node.name} (hijacks tensor operations)")
        if not isinstance(node, ast.ClassDef):
            for arg in [
                *node.args.posonlyargs,
                *node.args.args,
                *node.args.kwonlyargs,
                node.args.vararg,
                node.args.kwarg,
            ]:
                if arg is not None:
                    self._check_rebind(arg.arg, arg)
        self.generic_visit(node)

    visit_FunctionDef = _check_def
    visit_AsyncFunctionDef = _check_def
    visit_ClassDef = _check_def

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> None:
        for name in node.names:
            self._check_rebind(name, node)

    visit_Nonlocal = visit_Global

    def _check_attr_write(self, node: ast.Attribute) -> None:
        dotted = self.resolve(node)
        if dotted is None:
            return
        if any(dotted.startswith(p) for p in WRITABLE_PREFIXES):
            return
        self.add(
            node,
            "monkeypatch",
            f"assigns {dotted} (attributes of imported modules and of prepare's names "
            "are read-only)",
        )

    def _check_subscript_write(self, node: ast.Subscript) -> None:
        if self.resolve(node.value) == "os.environ":
            self._check_env_key(node, node.slice)

    def _check_env_key(self, node: ast.AST, key: ast.AST | None) -> None:
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            self.add(node, "environ", "changes os.environ under a computed name")
        elif key.value.startswith("AUTORESEARCH_") or key.value.startswith("PYTHON"):
            self.add(node, "environ", f"changes os.environ[{key.value!r}] (set by the runner)")

    # ---------------------------------------------------------------- uses

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in FORBIDDEN_BUILTINS and node.id not in self.aliases:
            self.add(node, "builtin", f"uses {node.id} (an escape hatch of the language)")
        elif isinstance(node.ctx, ast.Load):
            parent = self.parents.get(id(node))
            attr_base = (isinstance(parent, ast.Attribute) and parent.value is node) or (
                isinstance(parent, ast.Call)
                and self._literal_getattr(parent)
                and parent.args[0] is node
            )
            called = isinstance(parent, ast.Call) and parent.func is node
            if node.id in self.modules and not attr_base:
                self.add(
                    node,
                    "alias",
                    f"uses the module {node.id} as a value (only {node.id}.<name> is allowed)",
                )
            elif node.id == "open" and "open" not in self.aliases and not called:
                self.add(node, "alias", "uses open as a value (only open(...) is allowed)")
            if node.id in self.aliases and not attr_base:
                self._check_dotted(node, self.aliases[node.id])

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = node.attr
        parent = self.parents.get(id(node))
        if name.startswith("__") and name.endswith("__") and name not in ALLOWED_DUNDERS:
            self.add(node, "dunder", f"uses .{name} (reaches into the interpreter)")
        elif name in FORBIDDEN_ATTRS:
            self.add(
                node,
                "attribute",
                f"uses {self.resolve(node) or '.' + name} (frames, "
                "descriptors and file writes are off limits)",
            )
        elif not (isinstance(parent, ast.Attribute) and parent.value is node):
            dotted = self.resolve(node)
            if dotted is not None:
                self._check_dotted(node, dotted)
        self.generic_visit(node)

    def _check_dotted(self, node: ast.AST, dotted: str) -> None:
        bad = _forbidden_module(dotted)
        if bad:
            self.add(node, "forbidden", f"uses {dotted} ({bad} is not allowed in train.py)")
        elif dotted == "sys.path" or dotted.startswith("sys.path."):
            if not self._is_sys_path_idiom(node):
                self.add(
                    node,
                    "sys.path",
                    "changes or reads sys.path (only "
                    "`sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))`)",
                )
        elif dotted in ("sys.stdout", "sys.stderr") and isinstance(
            getattr(node, "ctx", None), ast.Store | ast.Del
        ):
            self.add(node, "monkeypatch", f"replaces {dotted}")

    def _is_sys_path_idiom(self, node: ast.AST) -> bool:
        if not (isinstance(node, ast.Attribute) and node.attr == "insert"):
            return False
        call = self.parents.get(id(node))
        return (
            isinstance(call, ast.Call)
            and call.func is node
            and ast.dump(ast.Expression(body=call)) == SYS_PATH_IDIOM
        )

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id not in self.aliases:
            if func.id in _GETATTR:
                self._check_getattr(node)
            elif func.id == "open":
                self._check_open(node)
        elif (
            isinstance(func, ast.Attribute)
            and func.attr in _ENV_MUTATORS
            and self.resolve(func.value) == "os.environ"
        ):
            if func.attr in ("update", "clear", "popitem"):
                self.add(node, "environ", f"calls os.environ.{func.attr}()")
            else:
                self._check_env_key(node, node.args[0] if node.args else None)
        self.generic_visit(node)

    @staticmethod
    def _literal_getattr(node: ast.AST | None) -> bool:
        """``getattr(x, "name")``: the same as ``x.name`` (checked as such)."""
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _GETATTR
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        )

    def _check_getattr(self, node: ast.Call) -> None:
        name = node.args[1] if len(node.args) > 1 else None
        if isinstance(name, ast.JoinedStr) and node.args and self._safe_fstring(node.args[0], name):
            return
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            self.add(
                node,
                "getattr",
                "getattr/hasattr with a computed attribute name (only a "
                'literal, or an f-string starting with a plain prefix like f"mask_{w}")',
            )
            return
        fake = ast.Attribute(value=node.args[0], attr=name.value, ctx=ast.Load())
        ast.copy_location(fake, node)
        self.parents[id(fake)] = node
        self.visit_Attribute(fake)
        self.parents[id(node.args[0])] = node  # generic_visit sees it as getattr's argument

    def _safe_fstring(self, obj: ast.expr, name: ast.JoinedStr) -> bool:
        """``getattr(self, f"mask_{w}")``: a computed name that cannot reach a dunder, a frame
        attribute or a module's function (a letter-first literal prefix, a non-module object)."""
        head = name.values[0] if name.values else None
        if not (isinstance(head, ast.Constant) and isinstance(head.value, str)):
            return False
        prefix = head.value
        if not prefix[:1].isalpha() or any(a.startswith(prefix) for a in FORBIDDEN_ATTRS):
            return False
        root = obj
        while isinstance(root, ast.Attribute):
            root = root.value
        return not (isinstance(root, ast.Name) and root.id in self.aliases)

    def _check_open(self, node: ast.Call) -> None:
        path = (
            node.args[0]
            if node.args
            else next((k.value for k in node.keywords if k.arg == "file"), None)
        )
        if not (isinstance(path, ast.Constant) and isinstance(path.value, str)):
            self.add(
                node,
                "open",
                "open() of a computed path or a descriptor (only a literal path, read-only)",
            )
        mode = (
            node.args[1]
            if len(node.args) > 1
            else next((k.value for k in node.keywords if k.arg == "mode"), None)
        )
        if mode is None:
            return
        if not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)) or any(
            c in mode.value for c in "wax+"
        ):
            self.add(node, "open", "open() for writing (train.py writes no files)")

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(value, str):
            for text in FORBIDDEN_TEXT:
                if text in value:
                    self.add(
                        node,
                        "text",
                        f"names {text!r} (descriptors and process internals are off limits)",
                    )
