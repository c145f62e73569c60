"""Stopping a remote command of :mod:`tminus.hosts.ssh`: the marker line by which a command
reports its process group and start time, and the kill script run over a second channel
(SIGTERM, SIGKILL after the grace; a group led by another process by now is left alone)."""

from __future__ import annotations

import asyncio
import shlex

import asyncssh

from tminus import work
from tminus.hosts._ssh_config import become_command

_MARK = "\x1etminus-pgid "
# The shell's pid (its process group: sshd starts each session's shell with setsid), its
# start time (field 22 of /proc/PID/stat, with shell builtins only) and its name (``sh=``,
# from $0), on the same channel; the positional parameters and the variable it used are
# cleared, since a login shell that is POSIX sh runs the command's script itself after it.
_MARK_CMD = (
    "_tm_t=; if [ -r /proc/$$/stat ]; then read -r _tm_t </proc/$$/stat; "
    "set -- ${_tm_t##*) }; _tm_t=${20}; fi; "
    'printf \'\\036tminus-pgid %s %s sh=%s\\n\' "$$" "$_tm_t" "${0##*/}" >&2; set --; unset _tm_t'
)
#: Login shells that run a script themselves, with no ``exec sh -c`` after the marker.
POSIX_SHELLS = frozenset({"sh", "dash"})


def parse_mark(line: str) -> tuple[int, str, str] | None:
    """(pid, start token, shell name) of a marker line, or None if it is not one."""
    if not line.startswith(_MARK):
        return None
    fields = line[len(_MARK) :].split()
    try:
        pid = int(fields[0])
    except (ValueError, IndexError):
        return None
    token = next((f for f in fields[1:] if not f.startswith("sh=")), "")
    shell = next((f[3:] for f in fields[1:] if f.startswith("sh=")), "")
    return pid, token, shell


# Kill process groups "PGID TOKEN" (a group whose leader's start time differs is another
# process: skipped): SIGTERM, up to GRACE_TENTHS × 0.1 s for them to end, then SIGKILL.
_KILL_SCRIPT = """ours() {
  if [ -r /proc/$1/stat ]; then read -r s </proc/$1/stat; set -- "$1" "$2" ${s##*) }
    [ -z "$2" ] || [ "${22}" = "$2" ]
  else kill -s 0 -- "-$1" 2>/dev/null; fi
}
gs=; for p in GROUPS; do set -- $p; if ours "$1" "$2"; then gs="$gs $1"; fi; done
[ -n "$gs" ] || exit 0
for g in $gs; do kill -s TERM -- "-$g" 2>/dev/null; done
i=0; while [ $i -lt GRACE_TENTHS ]; do
  a=; for g in $gs; do kill -s 0 -- "-$g" 2>/dev/null && a=1; done
  [ -n "$a" ] || break; sleep 0.1; i=$((i + 1))
done
for g in $gs; do kill -s KILL -- "-$g" 2>/dev/null; done
echo killed
"""


async def kill_groups(
    conn: asyncssh.SSHClientConnection,
    groups: list[tuple[int, str]],
    user: str | None,
    kill_timeout: float,
) -> bool:
    """Kill process groups ``(pgid, start token)`` over a second channel on ``conn``, as the
    login user and (concurrently) as the become ``user``: see
    :meth:`tminus.hosts.ssh.SshHost._kill`."""
    groups = [(g, t) for g, t in groups if g > 1]
    if not groups:
        return False
    grace = work.grace_s()
    script = _KILL_SCRIPT.replace("GRACE_TENTHS", str(round(grace * 10))).replace(
        "GROUPS", " ".join(shlex.quote(f"{g} {t}".strip()) for g, t in groups)
    )
    scripts = [script]
    if user:
        scripts.append(become_command(user, script))

    async def one(text: str) -> bool:
        try:
            res = await asyncio.wait_for(conn.run(text, check=False), grace + kill_timeout)
        except (asyncssh.Error, OSError, TimeoutError):
            return False
        return "killed" in str(res.stdout or "")

    return any(await asyncio.gather(*(one(t) for t in scripts)))
