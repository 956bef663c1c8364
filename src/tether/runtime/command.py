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


def named_programs(command: str) -> list[str]:
    """The words of a command that may name a program (for making programs reachable by the
    app's user): argv[0] of a plain command; for a shell command, every word that is not an
    operator and holds no expansion (a program may follow `|`, `&&`, `exec`, …)."""
    if not needs_shell(command):
        return shlex.split(command)[:1]
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    try:
        for word in lexer:
            if word and not set(word) & set("|&;<>()$`*?[]~=") and len(words) < 32:
                words.append(word)
    except ValueError:
        pass
    return words
