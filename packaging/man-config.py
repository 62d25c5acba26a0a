#!/usr/bin/env python3
"""Writes sluice.toml(5) from README.md's configuration reference.

The page is made from the same text a reader of the README sees, so the two cannot say
different things: the prose and TOML blocks of "## Configuration reference", and the
`[dataplane]` blocks of "## Running on AF_XDP" and "## Running on DPDK". Each TOML block is
split at its table headers into one subsection per table, shown as written (keys, defaults
and the comments that explain them). config/tests/reference.rs checks that the README's
tables and keys are exactly the ones the parser takes.

    python3 packaging/man-config.py README.md VERSION > sluice.toml.5
"""

import re
import sys

SECTIONS = ["## Running on AF_XDP", "## Running on DPDK", "## Configuration reference"]


def sections(readme):
    """(heading, [lines]) for each reference section, in README order."""
    out, cur = [], None
    for line in readme.splitlines():
        if line.startswith("## "):
            cur = None
            if any(line.startswith(s) for s in SECTIONS):
                cur = (line[3:], [])
                out.append(cur)
            continue
        if cur is not None:
            cur[1].append(line)
    return out


def esc(text):
    """Roff-safe text: backslashes doubled, a leading dot or quote guarded."""
    text = text.replace("\\", "\\e")
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def inline(text):
    """Markdown inline code and links as plain roff (code in bold)."""
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
    parts = text.split("`")
    out = []
    for i, p in enumerate(parts):
        out.append("\\fB" + esc(p) + "\\fR" if i % 2 else esc(p))
    return "".join(out)


def table_header(line):
    body = line.lstrip()
    if body.startswith("#"):
        body = body[1:].lstrip()
    m = re.match(r"^\[\[?([a-z0-9_.]+)\]\]?", body)
    return m.group(0) if m else None


def code(lines):
    return [".RS 4", ".nf"] + [esc(l) for l in lines] + [".fi", ".RE"]


def toml_block(lines):
    """A TOML block as one subsection per table (lines before the first header stay plain)."""
    out, chunk, header = [], [], None
    for line in lines + [None]:
        h = table_header(line) if line is not None else None
        if line is None or h is not None:
            while chunk and not chunk[-1].strip():
                chunk.pop()
            if chunk:
                if header:
                    out.append(".SS " + esc(header))
                out += code(chunk)
            chunk, header = [], h
            if line is None:
                break
            # A commented header (`# [[service]]`) is shown as written, under its heading.
        chunk.append(line)
    return out


def render(readme, version):
    out = [
        '.TH SLUICE.TOML 5 "" "sluice %s" "File Formats Manual"' % version,
        ".SH NAME",
        "sluice.toml \\- configuration file of the sluice packet balancer",
        ".SH SYNOPSIS",
        "\\fB/etc/sluice/sluice.toml\\fR",
        ".SH DESCRIPTION",
        "The file \\fBsluice run\\fR, \\fBsluice check\\fR and \\fBsluice replay\\fR read "
        "(\\fB\\-\\-config\\fR), in TOML. Unknown keys are refused, and every error names the "
        "file, line and key and says how to fix it. \\fBsluice check \\-\\-config FILE\\fR "
        "validates a file; \\fBsystemctl reload sluice\\fR (SIGHUP) or \\fBsluicectl reload\\fR "
        "applies an edited one, or refuses it and keeps the running configuration.",
        ".PP",
        "Each table below is shown with its keys and defaults as a file would have them; "
        "commented-out keys are optional alternatives.",
    ]
    for heading, lines in sections(readme):
        out.append(".SH " + esc(heading.upper().replace("`", "")))
        para, block, lang = [], None, ""

        def flush_para():
            if para:
                out.append(".PP")
                out.append(inline(" ".join(para)))
                para.clear()

        for line in lines:
            if line.startswith("```"):
                if block is None:
                    flush_para()
                    block, lang = [], line[3:].strip()
                else:
                    out.extend(toml_block(block) if lang == "toml" else [".PP"] + code(block))
                    block = None
                continue
            if block is not None:
                block.append(line)
            elif not line.strip():
                flush_para()
            elif line.startswith("### "):
                flush_para()
                out.append(".SS " + inline(line[4:]))
            elif line.startswith(("- ", "* ")):
                flush_para()
                out.append(".IP \\(bu 2")
                out.append(inline(line[2:]))
            else:
                para.append(line.strip())
        flush_para()
    out += [
        ".SH FILES",
        ".TP",
        "\\fB/etc/sluice/sluice.toml\\fR",
        "The configuration the systemd unit runs.",
        ".TP",
        "\\fB/usr/share/doc/sluice/examples/\\fR",
        "Example configurations.",
        ".SH SEE ALSO",
        "\\fBsluice\\fR(1), \\fBsluicectl\\fR(1), \\fBsluice-run\\fR(1), "
        "\\fBsluice-check\\fR(1)",
    ]
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: man-config.py README.md VERSION > sluice.toml.5")
    with open(sys.argv[1], encoding="utf-8") as f:
        readme = f.read()
    page = render(readme, sys.argv[2])
    if ".SS [node]" not in page or ".SS [dataplane.dpdk]" not in page:
        sys.exit("man-config.py: README.md has no configuration reference to render")
    sys.stdout.write(page)


if __name__ == "__main__":
    main()
