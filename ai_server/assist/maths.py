"""Arithmetic and unit conversions by code: "what is 17 times 23", "how many minutes are in 2.5 hours".

A small model gets numbers wrong ("2.5 hours is 12.5 minutes"); these are exact. Arithmetic is
parsed into a Python expression of numbers and + - * / ** only and evaluated over its AST (never
``eval``); conversions go through pint. Operands are the templates' wildcards, so anything that is
not a number ("what is love times ...") is ``handled=False`` and the LLM answers.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
from collections.abc import Callable
from typing import Any, Final

from ai_server.assist.core import AssistContext, AssistReply, AssistServices, IntentMatch, SlotRows

# Spoken operator -> Python operator (the "operator" slot list).
OPERATORS: Final = {
    "plus": "+", "minus": "-", "less": "-", "times": "*", "multiplied by": "*", "x": "*",
    "divided by": "/", "over": "/", "to the power of": "**", "to the power": "**",
}  # fmt: skip
_OPERATOR_WORDS: Final = re.compile(
    r"\b(" + "|".join(re.escape(w) for w in sorted(OPERATORS, key=len, reverse=True)) + r")\b"
)
_BINARY: Final[dict[type[ast.operator], Callable[[Any, Any], Any]]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}  # fmt: skip
MAX_EXPONENT: Final = 100
MAX_MAGNITUDE: Final = 1e15  # beyond it a spoken number is useless (and pow would run away)

_SMALL: Final = {w: i for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"))}  # fmt: skip
_TENS: Final = {w: 10 * (i + 2) for i, w in enumerate(
    ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"))}  # fmt: skip
_SCALES: Final = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_FRACTIONS: Final = {"half": 0.5, "quarter": 0.25, "third": 1 / 3}


def number(text: str) -> float | None:
    """A spoken amount as a number: "2.5", "two and a half", "a quarter", "twenty three"; None if not one."""
    words = text.lower().replace("-", " ").split()
    if words in (["a"], ["an"]):  # "how many feet in a mile"
        return 1.0
    if len(words) == 1:
        try:
            return float(words[0])
        except ValueError:
            pass
    total, current, seen = 0.0, 0.0, False
    for i, word in enumerate(words):
        if word in ("a", "an") and i + 1 < len(words) and words[i + 1] in _FRACTIONS:
            current = current or 0.0
            continue
        if word == "and":
            continue
        if word in _FRACTIONS:
            current += _FRACTIONS[word]
        elif word in _SMALL:
            current += _SMALL[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word in _SCALES:
            current = (current or 1) * _SCALES[word]
            if _SCALES[word] >= 1000:
                total, current = total + current, 0.0
        else:
            try:
                current += float(word)
            except ValueError:
                return None
        seen = True
    return total + current if seen else None


def evaluate(expression: str) -> float:
    """Evaluate numbers and + - * / ** (with parentheses); ValueError on anything else."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not arithmetic: {expression!r}") from exc
    return _eval(tree.body)


def _eval(node: ast.expr) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError("exponent too large")
        result = float(_BINARY[type(node.op)](left, right))
        if not math.isfinite(result) or abs(result) > MAX_MAGNITUDE:
            raise ValueError("result too large")
        return result
    raise ValueError(f"not arithmetic: {ast.dump(node)[:60]}")


def spoken_number(x: float) -> str:
    """391, 2.5, about 0.33: exact when it is short, rounded (and said so) when it is not."""
    if x == int(x) and abs(x) < MAX_MAGNITUDE:
        return f"{int(x):,}"
    rounded = round(x, 2) if abs(x) >= 1 else float(f"{x:.2g}")
    text = f"{rounded:,.10g}"
    return text if rounded == x else f"about {text}"


def _operand(text: str) -> str | None:
    """An operand as Python source: a number, or numbers joined by spoken operators ("23 plus 4")."""
    parts = _OPERATOR_WORDS.split(text.lower())  # operand, operator, operand, ...
    out: list[str] = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(OPERATORS[part])
            continue
        value = number(part.strip())
        if value is None:
            return None
        out.append(repr(value))
    return " ".join(out)


async def calculate(match: IntentMatch, ctx: AssistContext) -> AssistReply:
    slots = match.slots
    a = _operand(str(slots.get("a", "")))
    b = _operand(str(slots.get("b", ""))) if "b" in slots else None
    words = match.text.lower()
    if a is None or ("b" in slots and b is None):
        return AssistReply("", match.intent, handled=False)
    if "square root" in words:
        expression, said = f"({a}) ** 0.5", f"The square root of {slots['a']}"
    elif "percent of" in words:
        expression, said = f"({a}) / 100 * ({b})", f"{slots['a']} percent of {slots['b']}"
    else:
        op = str(slots.get("operator", ""))
        spoken_op = next((w for w, o in OPERATORS.items() if o == op and w in words), op)
        expression, said = f"({a}) {op} ({b})", f"{slots['a']} {spoken_op} {slots['b']}"
    try:
        value = evaluate(expression)
    except ZeroDivisionError:
        return AssistReply("You can't divide by zero.", match.intent)
    except (ValueError, OverflowError):
        return AssistReply("That number is too big for me to say.", match.intent)
    return AssistReply(f"{said[0].upper()}{said[1:]} is {spoken_number(value)}.", match.intent,
                       data={"value": value})


# ---- unit conversions --------------------------------------------------------------------------

# Spoken unit -> pint unit. Singular and plural; British spellings too.
_UNITS: Final = {
    "second": "second", "minute": "minute", "hour": "hour", "day": "day", "week": "week",
    "millimeter": "millimeter", "centimeter": "centimeter", "meter": "meter", "kilometer": "kilometer",
    "millimetre": "millimeter", "centimetre": "centimeter", "metre": "meter", "kilometre": "kilometer",
    "inch": "inch", "foot": "foot", "yard": "yard", "mile": "mile",
    "gram": "gram", "kilogram": "kilogram", "kilo": "kilogram", "pound": "pound", "ounce": "ounce",
    "stone": "stone", "ton": "metric_ton", "tonne": "metric_ton",
    "milliliter": "milliliter", "liter": "liter", "millilitre": "milliliter", "litre": "liter",
    "gallon": "gallon", "cup": "cup", "tablespoon": "tablespoon", "teaspoon": "teaspoon",
    "fluid ounce": "fluid_ounce", "pint": "pint", "quart": "quart",
    "kilometer per hour": "kilometer / hour", "kilometre per hour": "kilometer / hour",
    "mile per hour": "mile / hour", "meter per second": "meter / second",
    "degree celsius": "degC", "degree fahrenheit": "degF", "celsius": "degC", "fahrenheit": "degF",
    "kelvin": "kelvin", "degree": "degree",
}  # fmt: skip
_IRREGULAR: Final = {"foot": "feet", "inch": "inches", "kilometer per hour": "kilometers per hour",
                     "kilometre per hour": "kilometres per hour", "mile per hour": "miles per hour",
                     "meter per second": "meters per second", "degree celsius": "degrees celsius",
                     "degree fahrenheit": "degrees fahrenheit", "celsius": "celsius", "fahrenheit": "fahrenheit",
                     "kelvin": "kelvin", "stone": "stone"}  # fmt: skip


def unit_rows() -> SlotRows:
    rows: SlotRows = []
    for name, unit in _UNITS.items():
        rows.append((name, unit, {"spoken": name}))
        plural = _IRREGULAR.get(name, name + "s")
        if plural != name:
            rows.append((plural, unit, {"spoken": plural}))
    return rows


def operator_rows() -> SlotRows:
    return [(word, op, {}) for word, op in OPERATORS.items()]


@functools.cache
def units() -> Any:
    """pint's registry: ~0.3 s to build, so once per process (warm it at start-up)."""
    import pint

    return pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


def _said_unit(text: str, unit: str) -> str:
    """How the user named ``unit`` (the plural they used), for the answer."""
    names = sorted((r[0] for r in unit_rows() if r[1] == unit), key=len, reverse=True)
    return next((n for n in names if re.search(rf"\b{re.escape(n)}\b", text)), names[0] if names else unit)


async def convert(match: IntentMatch, ctx: AssistContext) -> AssistReply:
    amount = number(str(match.slots.get("amount", "")))
    src, dst = str(match.slots.get("from_unit", "")), str(match.slots.get("to_unit", ""))
    if amount is None or not src or not dst:
        return AssistReply("", match.intent, handled=False)
    import pint

    ureg = units()
    try:
        value = float(ureg.Quantity(amount, src).to(dst).magnitude)
    except pint.DimensionalityError:
        return AssistReply(f"I can't convert {src.replace('_', ' ')} to {dst.replace('_', ' ')}.", match.intent)
    text = match.text.lower()
    src_said = _said_unit(text, src)
    dst_said = _plural(_said_unit(text, dst), dst, value)
    amount_said = spoken_number(amount).removeprefix("about ")
    return AssistReply(f"{amount_said} {src_said} is {spoken_number(value)} {dst_said}.", match.intent,
                       data={"value": value, "unit": dst})


def _plural(said: str, unit: str, value: float) -> str:
    singular = next((r[0] for r in unit_rows() if r[1] == unit and r[2].get("spoken") in _UNITS), said)
    return singular if value == 1 else said


def install(services: AssistServices) -> None:
    services.registry.register("NailaCalculate", calculate, read_only=True)
    services.registry.register("NailaConvert", convert, read_only=True)
    services.registry.add_slot_provider("unit", unit_rows)
    services.registry.add_slot_provider("operator", operator_rows)
