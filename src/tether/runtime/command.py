"""How an app command becomes the argv Tether executes.

A plain command (`python app.py --workers 2`, with quotes as a shell would read them) is split
into words with `shlex` and executed directly: no shell between Tether and the app, so nothing in
the command is interpreted twice and the app is the process its log writer started.

A command that asks for a shell is run with `/bin/sh -c COMMAND`, exactly as written. It asks for
one when it holds shell syntax anywhere — a pipe or list (`|`, `&`, `;`), a redirection (`<`,
`>`), a subshell or substitution (`(`, `)`, `$`, a backquote), a glob (`*`, `?`, `[`), `~`, a
comment (`#`), a backslash or a line break — when it starts with a variable assignment
(`DEBUG=1 python app.py`) or with a shell builtin or keyword (`exec`, `cd`, `export`, `.`, `if`,
…), or when its quotes do not balance (the shell then reports the error). Quoted characters count
too: running such a command through the shell gives the same result, only with a shell in between.
An explicit `sh -c '...'` is split like any plain command: it runs that shell itself.
"""

from __future__ import annotations

import contextlib
import re
import shlex

SHELL = "/bin/sh"

_SHELL_CHARACTERS = frozenset("|&;<>()$`*?[]~#\\\n\r")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
#: words that only mean something to a shell (POSIX special builtins, keywords, and a few
#: common regular builtins that have no program of their own)
_SHELL_WORDS = frozenset({
    ".", ":", "source", "exec", "eval", "export", "readonly", "set", "unset", "shift", "trap",
    "cd", "ulimit", "umask", "alias", "wait", "command", "builtin", "if", "then", "else",
    "elif", "fi", "for", "while", "until", "do", "done", "case", "esac", "!", "{", "}",
    "function", "select", "time",
})


def needs_shell(command: str) -> bool:
    """Whether `command` is run through `/bin/sh -c` (see the module docstring)."""
    if any(c in _SHELL_CHARACTERS for c in command):
        return True
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: let the shell say what is wrong
        return True
    if not words:
        return True
    return bool(_ASSIGNMENT.match(words[0])) or words[0] in _SHELL_WORDS


def command_argv(command: str) -> list[str]:
    """The argv Tether executes for an app command."""
    if needs_shell(command):
        return [SHELL, "-c", command]
    return shlex.split(command)


#: shells whose `-c` script names programs of its own (`sh -c 'sleep 5; exec python app.py'`)
_SHELLS = frozenset({"sh", "bash", "dash", "ash", "ksh", "mksh", "zsh"})
_NOT_A_PROGRAM = frozenset("|&;<>()$`*?[]~=")
_MAX_PROGRAMS = 32


def named_programs(command: str, _depth: int = 0) -> list[str]:
    """The words of a command that may name a program (for making programs reachable by the
    app's user): argv[0] of a plain command; for a shell command, every word that is not an
    operator and holds no expansion (a program may follow `|`, `&&`, `exec`, …). The script of
    an explicit shell (`sh -c '…'`, `bash -c "…"`) is read the same way, two levels deep: the
    programs it runs are the app's too."""
    if not needs_shell(command):
        argv = shlex.split(command)
        return (argv[:1] + _script_programs(argv, 0, _depth))[:_MAX_PROGRAMS]
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens: list[str] = []
    with contextlib.suppress(ValueError):  # unbalanced quotes: the words read so far
        for token in lexer:
            tokens.append(token)
    words: list[str] = []
    for i, word in enumerate(tokens):
        if word and not set(word) & _NOT_A_PROGRAM:
            words.append(word)
        words.extend(_script_programs(tokens, i, _depth))
    return words[:_MAX_PROGRAMS]


def _script_programs(words: list[str], i: int, depth: int) -> list[str]:
    """The programs of the script `words[i]` runs when it is a shell given `-c SCRIPT`."""
    if (depth < 2 and i + 2 < len(words) and words[i].rsplit("/", 1)[-1] in _SHELLS
            and words[i + 1] == "-c"):
        return named_programs(words[i + 2], depth + 1)
    return []
