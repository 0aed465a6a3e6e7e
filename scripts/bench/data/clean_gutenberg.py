#!/usr/bin/env python3
"""Turns Project Gutenberg plain-text editions into the benchmark's prose format: one paragraph per line, blank
lines between, straight quotes, no italics underscores, and no headings, tables of contents or illustrations
(paragraphs of fewer than 8 words are dropped).

    clean_gutenberg.py TITLE=FILE [TITLE=FILE ...] > prose.txt
"""
import re
import sys

QUOTES = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\ufeff": ""}


def paragraphs(text):
    text = text.replace("\r\n", "\n")
    for mark in ("*** START OF", "***START OF"):
        if mark in text:
            text = text.split(mark, 1)[1].split("\n", 1)[1]
    for mark in ("*** END OF", "***END OF", "End of the Project Gutenberg", "End of Project Gutenberg"):
        if mark in text:
            text = text.split(mark, 1)[0]
    for block in re.split(r"\n\s*\n", text):
        line = " ".join(block.split())
        for curly, straight in QUOTES.items():
            line = line.replace(curly, straight)
        line = line.replace("_", "")
        lower = line.lower()
        if len(line.split()) < 8 or line.startswith("[Illustration") or line.isupper():
            continue
        if "etext" in lower or "gutenberg" in lower:  # transcribers' notes
            continue
        yield line


def main(args):
    if not args or any("=" not in a for a in args):
        sys.exit(__doc__)
    out = []
    for arg in args:
        title, path = arg.split("=", 1)
        with open(path, encoding="utf-8") as f:
            out.append(title)
            out.extend(paragraphs(f.read()))
    sys.stdout.write("\n\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
