"""The shell fallback: whole-file manifests of hosts without python3.

Sent as ``sh -s -- TOOL ROOT...``: one ``stat`` and one hash process per file,
slow but correct, with a hash tool whose output equals the agent's whole-file
digest (``SHELL_TOOLS``).
"""
from __future__ import annotations

import time
from typing import Sequence

from .model import Entry, Manifest, ManifestError

# the tool that prints the same digest as the agent's whole-file mode
SHELL_TOOLS = {"xxh3_128": "xxhsum -H2", "blake3": "b3sum", "sha256": "sha256sum"}
SHELL_TOOL_BINARIES = {"xxh3_128": "xxhsum", "blake3": "b3sum", "sha256": "sha256sum"}

# Per entry the script prints `path\0` then
# `S <mode hex> size uid gid mtime_s nlink dev ino major_hex minor_hex\n`, then for
# a symlink `target\0`, for a regular file `H digest\n` or `E reason\n`.
# find -exec ... {} + hands names over as argv: any byte except NUL survives.
SHELL_AGENT = r'''
H="$1"; shift
INNER='
H=$1; shift
for f; do
  s=$(stat -c "%f %s %u %g %Y %h %d %i %t %T" "$f" 2>/dev/null) || { printf "%s\0E stat failed\n" "$f"; continue; }
  printf "%s\0S %s\n" "$f" "$s"
  if [ -L "$f" ]; then
    printf "%s\0" "$(readlink "$f")"
  elif [ -f "$f" ]; then
    if d=$($H < "$f" 2>/dev/null); then printf "H %s\n" "${d%% *}"; else echo "E unreadable"; fi
  fi
done'
for r; do
  find "$r" -xdev -exec sh -c "$INNER" sh "$H" {} + || echo "FINDFAILED $r" >&2
done
printf "\0END\n"
'''

_S_TYPES = {0o100000: "f", 0o040000: "d", 0o120000: "l", 0o020000: "c", 0o060000: "b",
            0o010000: "p", 0o140000: "s"}


def parse_shell_output(data: bytes, roots: Sequence[bytes], algo: str, host: str) -> Manifest:
    m = Manifest(roots=list(roots), algo=algo, mode="whole", chunk_size=0, host=host,
                 started_ns=time.time_ns(), mtime_resolution_ns=1_000_000_000)
    pos = 0
    stripped = [r.rstrip(b"/") or b"/" for r in roots]

    def read_until(sep: bytes) -> bytes:
        nonlocal pos
        end = data.index(sep, pos)
        out, pos = data[pos:end], end + len(sep)
        return out

    files = total = errors = 0
    try:
        while pos < len(data):
            path = read_until(b"\0")
            line = read_until(b"\n")
            if path == b"" and line == b"END":
                m.complete = True
                break
            # longest matching root wins (roots may nest)
            ri, rel = 0, path
            for i, r in sorted(enumerate(stripped), key=lambda x: -len(x[1])):
                if path == r or path.startswith(r.rstrip(b"/") + b"/"):
                    ri, rel = i, path[len(r):].lstrip(b"/") if path != r else b""
                    break
            if line.startswith(b"E "):
                m.add(Entry(root=ri, rel=rel, type="?", error=line[2:].decode()))
                errors += 1
                continue
            f = line.decode().split()
            raw_mode = int(f[1], 16)
            e = Entry(root=ri, rel=rel, type=_S_TYPES.get(raw_mode & 0o170000, "?"), size=int(f[2]),
                      mode=raw_mode & 0o7777, uid=int(f[3]), gid=int(f[4]), mtime_ns=int(f[5]) * 1_000_000_000,
                      nlink=int(f[6]), ino=f"{f[7]}:{f[8]}")
            if e.type in ("c", "b"):
                e.rdev = f"{int(f[9], 16)}:{int(f[10], 16)}"
            if e.type == "l":
                e.target = read_until(b"\0")
            elif e.type == "f":
                files += 1
                total += e.size
                res = read_until(b"\n")
                if res.startswith(b"H "):
                    e.digest = res[2:].decode().strip()
                else:
                    e.error = res[2:].decode() or "unreadable"
                    errors += 1
            m.add(e)
    except (ValueError, IndexError) as exc:
        raise ManifestError(f"{host}: cannot parse shell fallback output at byte {pos}: {exc}") from exc
    if not m.complete:
        raise ManifestError(f"{host}: shell fallback output was truncated")
    m.stats = {"entries": len(m.entries), "files": files, "bytes": total, "errors": errors}
    return m
