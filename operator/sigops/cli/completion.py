"""Shell completion for ``sigops`` and ``kubectl-sigops``, read from their argparse parsers, so
a new verb or flag completes without anyone editing a script.

``script(parser, prog, shell)`` prints a bash script (zsh loads it through bashcompinit) that
asks the program itself for candidates: ``<prog> __complete WORD...`` (``kubectl_complete-sigops``
for the plugin, the name kubectl runs to complete ``kubectl sigops``). ``candidates`` is the
logic, pure apart from the ``names`` callback that lists objects for ``si/<TAB>``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

__all__ = ["script", "candidates", "verbs"]

_REF_KINDS = {"explain": ("si", "kr"), "verify": ("si", "kr", "sau"), "approve": ("si",),
              "deny": ("si",), "report": ("si", "sau"), "abort": ("kr",)}
_NAME_KINDS = {"audit": "sau"}
"""Verbs whose positional is a bare NAME of one kind (``kubectl sigops audit --follow N``)."""
_PLURALS = {"si": "signatureincidents", "kr": "keyrotations", "sau": "signatureaudits"}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in parser._actions:  # argparse keeps no public accessor for its subcommands
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def verbs(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(_subparsers(parser))


def _options(parser: argparse.ArgumentParser) -> list[str]:
    out: list[str] = []
    for a in parser._actions:
        if a.help == argparse.SUPPRESS:
            continue
        out += [o for o in a.option_strings if o.startswith("--") or len(o) == 2]
    return sorted(set(out))


def _action(parser: argparse.ArgumentParser, opt: str) -> argparse.Action | None:
    for a in parser._actions:
        if opt in a.option_strings:
            return a
    return None


def candidates(parser: argparse.ArgumentParser, words: Sequence[str],
               names: Callable[[str, str | None], list[str]] | None = None) -> list[str]:
    """Completions of the last of ``words`` (the words after the program name; the last one is
    being typed and may be empty)."""
    words = list(words) or [""]
    cur, before = words[-1], words[:-1]
    subs = _subparsers(parser)
    path: list[str] = []
    p = parser
    i = 0
    while i < len(before):  # walk down verbs and sub-verbs (sigops signal verify ...)
        w = before[i]
        act = _action(p, w) if w.startswith("-") else None
        if act is not None and act.nargs != 0 and not isinstance(
                act, argparse._StoreTrueAction | argparse._StoreFalseAction
                | argparse._VersionAction | argparse._HelpAction):
            i += 2  # the option's value
            continue
        if not w.startswith("-") and w in subs:
            path.append(w)
            p = subs[w]
            subs = _subparsers(p)
        i += 1
    prev = before[-1] if before else ""
    act = _action(p, prev) if prev.startswith("-") else None
    if act is not None and act.choices is not None:
        return [str(c) for c in act.choices if str(c).startswith(cur)]
    if act is not None and act.nargs != 0 and not isinstance(
            act, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return []  # a free value (a file, a URL): the shell's default completion
    if cur.startswith("-"):
        return [o for o in _options(p) if o.startswith(cur)]
    if subs:
        return [v for v in sorted(subs) if v.startswith(cur)]
    for a in p._actions:  # a positional with fixed choices (completion bash|zsh)
        if not a.option_strings and a.choices is not None:
            return [str(c) for c in a.choices if str(c).startswith(cur)]
    bare = _NAME_KINDS.get(path[-1] if path else "")
    if bare and parser.prog.startswith("kubectl"):
        ns = _value_of(before, ("-n", "--namespace"))
        return [n for n in (names(_PLURALS[bare], ns) if names is not None else [])
                if n.startswith(cur)]
    kinds = _REF_KINDS.get(path[-1] if path else "", ())
    if kinds and parser.prog.startswith("kubectl"):
        kind, sep, _ = cur.partition("/")
        if sep and kind in kinds and names is not None:
            ns = _value_of(before, ("-n", "--namespace"))
            return [f"{kind}/{n}" for n in names(_PLURALS[kind], ns)
                    if f"{kind}/{n}".startswith(cur)]
        return [f"{k}/" for k in kinds if f"{k}/".startswith(cur)]
    return []


def _value_of(words: Sequence[str], opts: tuple[str, ...]) -> str | None:
    for i, w in enumerate(words):
        if w in opts and i + 1 < len(words):
            return words[i + 1]
        for o in opts:
            if o.startswith("--") and w.startswith(o + "="):
                return w.split("=", 1)[1]
    return None


def script(parser: argparse.ArgumentParser, prog: str, shell: str) -> str:
    """The completion script for ``prog`` (``sigops`` or ``kubectl-sigops``)."""
    helper = "kubectl_complete-sigops" if prog == "kubectl-sigops" else f"{prog} __complete"
    fn = "_" + prog.replace("-", "_") + "_complete"
    body = f"""# {prog} completion ({shell}); generated by `{prog} completion {shell}`
{fn}() {{
    local IFS=$'\\n'
    local out
    out=$({helper} "${{COMP_WORDS[@]:1:COMP_CWORD}}" 2>/dev/null) || return 0
    COMPREPLY=($(printf '%s\\n' "$out" | grep -v '^:' || true))
    [[ ${{#COMPREPLY[@]}} -eq 1 && "${{COMPREPLY[0]}}" == */ ]] && compopt -o nospace
    return 0
}}
complete -o default -F {fn} {prog}
"""
    if shell == "zsh":
        return ("# zsh: load bash-style completion\nautoload -U +X bashcompinit && "
                "bashcompinit\n" + body)
    return body
