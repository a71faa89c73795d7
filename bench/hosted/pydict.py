"""Builds and drops a large dict of strings, then prints a digest of it.

    python3 pydict.py ENTRIES ROUNDS

Run with PYTHONMALLOC=malloc, every object goes through the C allocator:
each round creates ENTRIES keys and values (strings of varied length, from
a fixed seed), reads every entry back into a SHA-256 digest, and drops the
dict. The output (one digest line per round) depends only on the
arguments, so runs under different allocators must print the same bytes.
"""

import hashlib
import random
import sys


def build(rng, entries, round_no):
    table = {}
    for i in range(entries):
        key = "k%d-%x" % (round_no, rng.getrandbits(48))
        table[key] = key[::-1] * rng.randint(1, 6) + str(i)
    return table


def digest(table):
    h = hashlib.sha256()
    total = 0
    for key, value in table.items():
        h.update(key.encode())
        h.update(value.encode())
        total += len(value)
    return "%d entries, %d value chars, sha256 %s" % (len(table), total, h.hexdigest())


def main():
    entries, rounds = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(12345)
    for round_no in range(rounds):
        table = build(rng, entries, round_no)
        print("round %d: %s" % (round_no, digest(table)))
        del table


if __name__ == "__main__":
    main()
