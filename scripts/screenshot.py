#!/usr/bin/env python3
"""Renders a real terminal capture to PNG: `tmux capture-pane -e -p` output (text with its
colour escape sequences) is replayed into a terminal emulator (pyte) and each cell drawn with
DejaVu Sans Mono (Pillow). Used for the console screenshot in README.md:

    tmux capture-pane -e -p -t SESSION > capture.ans
    python3 scripts/screenshot.py capture.ans docs/console.png COLS ROWS

Needs: pip install pyte pillow; fonts-dejavu-core.
"""
import sys

import pyte
from PIL import Image, ImageDraw, ImageFont

FONT_DIR = "/usr/share/fonts/truetype/dejavu/"
SIZE = 15
PALETTE = {
    "black": (30, 30, 30), "red": (224, 108, 117), "green": (152, 195, 121), "brown": (229, 192, 123),
    "yellow": (229, 192, 123), "blue": (97, 175, 239), "magenta": (198, 120, 221), "cyan": (86, 182, 194),
    "white": (220, 223, 228), "brightblack": (92, 99, 112), "brightred": (240, 128, 128),
    "brightgreen": (170, 215, 140), "brightyellow": (240, 210, 140), "brightblue": (120, 190, 250),
    "brightmagenta": (210, 140, 230), "brightcyan": (110, 200, 210), "brightwhite": (250, 250, 250),
}
DEFAULT_FG, DEFAULT_BG = (220, 223, 228), (30, 33, 39)


def colour(name, default):
    if name == "default":
        return default
    if name in PALETTE:
        return PALETTE[name]
    if len(name) == 6:
        try:
            return tuple(int(name[i:i + 2], 16) for i in (0, 2, 4))
        except ValueError:
            pass
    return default


def main():
    src, dst, cols, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    screen = pyte.Screen(cols, rows)
    stream = pyte.Stream(screen)
    text = open(src, encoding="utf-8", errors="replace").read().rstrip("\n")
    # capture-pane ends lines with bare newlines; a terminal needs carriage returns too.
    stream.feed(text.replace("\n", "\r\n"))
    regular = ImageFont.truetype(FONT_DIR + "DejaVuSansMono.ttf", SIZE)
    bold = ImageFont.truetype(FONT_DIR + "DejaVuSansMono-Bold.ttf", SIZE)
    left, top, right, bottom = regular.getbbox("M")
    cw, ch = right - left + 1, int(SIZE * 1.3)
    pad = 12
    img = Image.new("RGB", (cols * cw + 2 * pad, rows * ch + 2 * pad), DEFAULT_BG)
    draw = ImageDraw.Draw(img)
    for y in range(rows):
        line = screen.buffer[y]
        for x in range(cols):
            cell = line[x]
            fg, bg = colour(cell.fg, DEFAULT_FG), colour(cell.bg, DEFAULT_BG)
            if cell.reverse:
                fg, bg = bg, fg
            px, py = pad + x * cw, pad + y * ch
            if bg != DEFAULT_BG:
                draw.rectangle([px, py, px + cw - 1, py + ch - 1], fill=bg)
            if cell.data.strip():
                draw.text((px, py + 2), cell.data, font=bold if cell.bold else regular, fill=fg)
    img.save(dst)


if __name__ == "__main__":
    main()
