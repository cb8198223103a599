"""Equality of math answers as the MATH-500 grader of the reasoning benchmarks decides it.

The deepseek-r1 and gpt-oss-120b references grade MATH-500 with PRM800K's `grade_answer`: an
answer is right when (a) Hendrycks' MATH normalization makes both strings equal, or (b) a second,
looser normalization does, or its elements (tuples and intervals split on commas) are equal
one by one, fractions literally, integers literally, the rest when sympy simplifies their
difference to 0. The rules below are those, step for step, so that our grades equal the
reference's item by item (tests/test_reasoning_grade.py compares them on written outputs).
"""
from __future__ import annotations

import re

_UNITS = ("degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week", "month",
          "year", "foot", "feet", "inch", "yard")
_UNIT_RES = [re.compile(f"{unit}(es)?(s)? *(\\^[0-9]+)?") for unit in _UNITS]
# sympy can hang on towers of powers; the reference refuses these before it tries
_BAD_SUBSTRINGS = ("^{", "^(")
_BAD_RES = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))
_TUPLE_CHARS = "()[]"
_TEXT_RE = re.compile(r"^\\text\{(?P<text>.+?)\}$")
_COMMAS_RE = re.compile(r"(\d)(,)(\d\d\d)($|\D)")


# --- Hendrycks' MATH normalization ------------------------------------------------------------

def _fix_fracs(s: str) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part[0] == "{":  # an empty part raises, and the whole normalization is dropped, as in the reference
            out += part
            continue
        if len(part) < 2:
            return s
        a, b, rest = part[0], part[1], part[2:]
        out += "{" + a + "}" + (b + rest if b == "{" else "{" + b + "}" + rest)
    return out


def _fix_a_slash_b(s: str) -> str:
    halves = s.split("/")
    if len(halves) != 2:
        return s
    try:
        a, b = int(halves[0]), int(halves[1])
    except ValueError:
        return s
    return "\\frac{%d}{%d}" % (a, b) if s == f"{a}/{b}" else s


def _fix_sqrt(s: str) -> str:
    parts = s.split("\\sqrt")
    out = parts[0]
    for part in parts[1:]:
        out += "\\sqrt" + (part if part[:1] == "{" else "{" + part[0] + "}" + part[1:])
    return out


def _strip_mathd(s: str) -> str:
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
                     ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")):
        s = s.replace(old, new)
    if "\\text{ " in s:  # units on the right
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise ValueError("units")
        s = parts[0]
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 3"
        s = sides[1]
    s = _fix_sqrt(s).replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


def normalize_mathd(answer: str) -> str:
    answer = answer.strip()
    try:
        m = _TEXT_RE.search(answer)
        if m is not None:
            answer = m.group("text").strip()
        return _strip_mathd(answer)
    except Exception:  # the reference keeps the answer as it was when a step fails
        return answer


# --- the looser normalization and sympy ---------------------------------------------------------

def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _is_int(x: float) -> bool:
    try:
        return abs(x - int(round(x))) <= 1e-7
    except (OverflowError, ValueError):
        return False


def _strip_commas(expr: str) -> str:
    while True:
        new = _COMMAS_RE.sub("\\1\\3\\4", expr)
        if new == expr:
            return new
        expr = new


def _str_is_int(s: str) -> bool:
    try:
        return _is_int(float(_strip_commas(s)))
    except (ValueError, OverflowError):
        return False


def _is_frac(s: str) -> bool:
    return bool(re.search(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$", s))


def _latex_to_text(expr: str) -> str:
    from pylatexenc import latex2text

    expr = expr.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac")
    expr = latex2text.LatexNodes2Text().latex_to_text(expr)
    for old, new in (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*")):
        expr = expr.replace(old, new)
    return expr.strip()


def normalize_loose(expr: str) -> str:
    m = _TEXT_RE.search(expr)
    if m is not None:
        expr = m.group("text")
    for old, new in (("\\%", "%"), ("\\$", "$"), ("$", ""), ("%", ""), (" or ", " , "), (" and ", " , "),
                     ("million", "*10^6"), ("billion", "*10^9"), ("trillion", "*10^12")):
        expr = expr.replace(old, new)
    for unit_re in _UNIT_RES:
        expr = unit_re.sub("", expr)
    expr = re.sub(r"\^ *\\circ", "", expr)
    if expr and expr[0] == "{" and expr[-1] == "}":
        expr = expr[1:-1]
    expr = re.sub(",\\\\! *", "", expr)
    if _is_float(expr) and _is_int(float(expr)):
        expr = str(int(round(float(expr))))
    if "\\" in expr:
        try:
            expr = _latex_to_text(expr)
        except Exception:  # as the reference: latex it cannot read stays as it is
            pass
    expr = re.sub("- *", "-", expr)
    expr = re.sub("([0-9]) +([0-9])", "\\1+\\2", expr)  # mixed numbers: 7 3/4 -> 7+3/4
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    if _str_is_int(expr):
        expr = str(int(float(expr.replace(",", ""))))
    return expr


def _may_eval(expr: str) -> bool:
    letters = {c for c in expr.replace("sqrt", "").replace("frac", "") if c.isalpha()}
    return (len(letters) <= 2 and not any(b in expr for b in _BAD_SUBSTRINGS)
            and not any(r.search(expr) for r in _BAD_RES))


def _equal_under_sympy(truth: str, given: str) -> bool:
    expr = f"({truth})-({given})"
    if not _may_eval(expr):
        return False
    try:
        import sympy
        from sympy.parsing import sympy_parser

        parsed = sympy_parser.parse_expr(
            expr.replace("^", "**"),
            transformations=sympy_parser.standard_transformations + (sympy_parser.implicit_multiplication_application,))
        return sympy.simplify(parsed) == 0
    except Exception:  # the reference counts anything sympy cannot do as unequal
        return False


def _split_tuple(expr: str) -> list[str]:
    expr = _strip_commas(expr)
    if not expr:
        return []
    if (len(expr) > 2 and expr[0] in _TUPLE_CHARS and expr[-1] in _TUPLE_CHARS
            and not any(c in expr[1:-1] for c in _TUPLE_CHARS)):
        return [e.strip() for e in expr[1:-1].split(",")]
    return [expr]


def _elements_equal(truth: str, given: str) -> bool:
    if _is_frac(truth) and _is_frac(given):
        return truth == given  # an unreduced fraction is wrong, so no sympy here
    if _str_is_int(truth) != _str_is_int(given):
        return False
    return _equal_under_sympy(truth, given)


def answers_equal(given: str | None, truth: str) -> bool:
    """Whether `given` is a right answer to a question whose answer is `truth`."""
    if given is None:
        return False
    if normalize_mathd(truth) == normalize_mathd(given):
        return True
    truth_n, given_n = normalize_loose(truth), normalize_loose(given)
    if truth_n == given_n:
        return True
    if not given_n:
        return False
    truth_elems, given_elems = _split_tuple(truth_n), _split_tuple(given_n)
    if len(truth_elems) > 1 and (truth_n[0] != given_n[0] or truth_n[-1] != given_n[-1]):
        return False
    if len(truth_elems) != len(given_elems):
        return False
    return all(_elements_equal(t, g) for t, g in zip(truth_elems, given_elems))
