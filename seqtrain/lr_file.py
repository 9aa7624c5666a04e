"""The `learning_rates` score file in RETURNN's exact format: `{epoch: EpochData(learningRate=...,
error={...}), ...}` with `:meta:` keys, written as RETURNN's better_repr writes it and read without eval."""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from seqtrain.errors import DataError

META_PREFIX = ":meta:"


@dataclass
class EpochData:
    """One epoch: its LR, its scores (`dev_score_output`, ...) and meta info (`global_train_step`)."""

    learning_rate: float
    error: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


# --- the `learning_rates` file: RETURNN's better_repr of {epoch: EpochData} ---


def format_learning_rates(epoch_data: Mapping[int, EpochData]) -> str:
    """The file text exactly as RETURNN's `LearningRateControl.save` writes it."""
    return _repr(dict(epoch_data)) + "\n"


def _repr(obj: Any) -> str:
    # RETURNN util.basic.better_repr: sorted dicts, multi-line once the items reach 40 characters.
    if isinstance(obj, EpochData):
        error = {**obj.error, **{META_PREFIX + k: v for k, v in obj.meta.items()}}
        return f"EpochData(learningRate={_repr(obj.learning_rate)}, error={_repr(error)})"
    if isinstance(obj, dict):
        items = [f"{_repr(k)}: {_repr(v)}" for k, v in sorted(obj.items())]
        if sum(len(item) for item in items) >= 40:
            return "{\n" + "".join(item + ",\n" for item in items) + "}"
        return "{" + ", ".join(items) + "}"
    if isinstance(obj, list):
        return "[\n" + "".join(_repr(v) + ",\n" for v in obj) + "]"
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"float('{obj!r}')"
    return repr(obj)


def parse_learning_rates(text: str, where: str = "learning_rates") -> dict[int, EpochData]:
    """Read RETURNN's format without eval: a dict literal of `EpochData(learningRate=..., error={...})`."""
    try:
        tree = ast.parse(text.strip() or "{}", mode="eval").body
    except SyntaxError as exc:
        raise DataError(f"{where}: not a learning-rates file (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(tree, ast.Dict):
        raise DataError(f"{where}: expected a dict {{epoch: EpochData(...)}}")
    result = {}
    for key, value in zip(tree.keys, tree.values):
        epoch = _literal(key, where)
        if not isinstance(epoch, int):
            raise DataError(f"{where}: epoch keys must be integers, got {epoch!r}")
        result[epoch] = _epoch_data(value, f"{where}: epoch {epoch}")
    return result


def _epoch_data(node: ast.expr, where: str) -> EpochData:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "EpochData"):
        raise DataError(f"{where}: expected EpochData(learningRate=..., error={{...}})")
    kwargs = {kw.arg: _literal(kw.value, where) for kw in node.keywords}
    lr = kwargs.pop("learningRate", kwargs.pop("learning_rate", None))
    error = kwargs.pop("error", None)
    meta = kwargs.pop("meta", None)
    if kwargs or node.args or not isinstance(lr, (int, float)):
        raise DataError(f"{where}: unexpected EpochData arguments")
    if isinstance(error, (int, float)):  # RETURNN's old format: a single score
        error = {"old_format_score": float(error)}
    error = dict(error or {})
    if meta is None:
        meta = {k[len(META_PREFIX) :]: v for k, v in error.items() if k.startswith(META_PREFIX)}
        error = {k: v for k, v in error.items() if not k.startswith(META_PREFIX)}
    return EpochData(float(lr), error, dict(meta))


_NAMES = {"nan": math.nan, "inf": math.inf, "None": None, "True": True, "False": False}


def _literal(node: ast.expr, where: str) -> Any:
    """A Python literal, plus the float('nan'), nan, inf and np.float64(x) that RETURNN files contain."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, where)
        if isinstance(value, (int, float)):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [_literal(v, where) for v in node.elts]
        return values if isinstance(node, ast.List) else tuple(values)
    if isinstance(node, ast.Dict):
        return {_literal(k, where): _literal(v, where) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("float", "int"):
            return {"float": float, "int": int}[func.id](_literal(node.args[0], where))
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in ("np", "numpy")
        ):
            value = _literal(node.args[0], where)  # np.float64(0.5) as numpy 2 reprs it
            return float(value) if func.attr.startswith("float") else value
    raise DataError(f"{where}: unsupported expression {ast.unparse(node)[:80]!r}")
