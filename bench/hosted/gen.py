#!/usr/bin/env python3
"""Deterministic inputs of the real-program workloads (fixed seeds).

    gen.py sort OUT MEGABYTES [SEED]   lines of random lowercase words, about
                                       MEGABYTES MB, for `LC_ALL=C sort`
    gen.py git DIR COMMITS [SEED]      a fresh repository in DIR with COMMITS
                                       commits built through `git fast-import`

Both depend only on their arguments: Python's `random.Random(seed)` yields
the same stream on every version since 3.2 (`randbytes` since 3.9), and the
repository's authors, committers and dates are written into the import
stream, so `git log -p` prints the same bytes on every run.
"""

import os
import random
import subprocess
import sys

LETTERS = bytes(range(ord("a"), ord("z") + 1))
# Maps every byte value to a letter, a space or (rarely) nothing special:
# 256 entries, 26 letters repeated, spaces sprinkled in to form words.
WORD_TABLE = bytes((LETTERS + b"     ")[b % 31] for b in range(256))


def random_text(rng, size):
    """`size` bytes of lowercase words and spaces."""
    return rng.randbytes(size).translate(WORD_TABLE)


def gen_sort(out, megabytes, seed):
    """Writes lines of 8..120 characters until about `megabytes` MB."""
    rng = random.Random(seed)
    target = megabytes * 1_000_000
    written = 0
    with open(out, "wb") as f:
        while written < target:
            block = random_text(rng, 1 << 20)
            lines = []
            pos = 0
            while pos < len(block):
                length = rng.randint(8, 120)
                lines.append(block[pos : pos + length])
                pos += length
            chunk = b"\n".join(lines) + b"\n"
            f.write(chunk)
            written += len(chunk)


def text_lines(rng, count):
    """`count` lines of source-like text."""
    return [
        b"    " * rng.randint(0, 3) + random_text(rng, rng.randint(0, 72))
        for _ in range(count)
    ]


def edit(rng, lines):
    """Inserts, deletes and rewrites a few runs of lines in place."""
    for _ in range(rng.randint(1, 4)):
        pos = rng.randint(0, len(lines))
        action = rng.random()
        if action < 0.45 or len(lines) < 20:
            lines[pos:pos] = text_lines(rng, rng.randint(1, 12))
        elif action < 0.75:
            del lines[pos : pos + rng.randint(1, 8)]
        else:
            lines[pos : pos + rng.randint(1, 6)] = text_lines(rng, rng.randint(1, 6))


def data(payload):
    return b"data %d\n" % len(payload) + payload + b"\n"


def gen_git(directory, commits, seed):
    """A repository whose history edits, adds and removes text files."""
    rng = random.Random(seed)
    os.makedirs(directory, exist_ok=True)
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, HOME=directory)
    subprocess.run(["git", "init", "-q", "-b", "main", directory], check=True, env=env)
    files = {}
    names = ["alice", "bob", "carol", "dave", "eve"]
    stream = []
    date = 1_600_000_000
    for n in range(commits):
        date += rng.randint(60, 86_400)
        who = names[rng.randrange(len(names))]
        ident = b"%s <%s@example.org> %d +0000" % (who.encode(), who.encode(), date)
        message = b"change %d: " % n + random_text(rng, rng.randint(10, 60)) + b"\n"
        stream.append(b"commit refs/heads/main\nmark :%d\n" % (n + 1))
        stream.append(b"author " + ident + b"\ncommitter " + ident + b"\n")
        stream.append(data(message))
        if n > 0:
            stream.append(b"from :%d\n" % n)
        touched = set()
        if n == 0 or len(files) < 8 or rng.random() < 0.1:
            name = "src/%s/file%04d.txt" % (rng.choice(["core", "net", "ui", "db"]), n)
            files[name] = text_lines(rng, rng.randint(40, 300))
            touched.add(name)
        if len(files) > 12 and rng.random() < 0.03:
            victim = rng.choice(sorted(files))
            del files[victim]
            stream.append(b"D %s\n" % victim.encode())
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(sorted(files))
            edit(rng, files[name])
            touched.add(name)
        for name in sorted(touched):
            if name in files:
                content = b"\n".join(files[name]) + b"\n"
                stream.append(b"M 100644 inline %s\n" % name.encode() + data(content))
        stream.append(b"\n")
    subprocess.run(
        ["git", "-C", directory, "fast-import", "--quiet"],
        input=b"".join(stream),
        check=True,
        env=env,
    )


def main(argv):
    if len(argv) >= 4 and argv[1] == "sort":
        gen_sort(argv[2], int(argv[3]), int(argv[4]) if len(argv) > 4 else 1)
    elif len(argv) >= 4 and argv[1] == "git":
        gen_git(argv[2], int(argv[3]), int(argv[4]) if len(argv) > 4 else 1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
