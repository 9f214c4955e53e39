"""`make demo`: attribute a sentence of our own with the real SmolLM2-135M, offline.

Prints the greedy next token, the top context tokens and their components, and writes an HTML and a PNG heatmap.
"""

from __future__ import annotations

import argparse
import os
import time

import heat_module as hm

TEXT = "Maya packed her umbrella because the radio said it would rain, but she left it on the bus, so she got"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--text", default=TEXT)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    model, tokenizer = hm.load_model("smollm2")
    print(f"loaded SmolLM2-135M-Instruct offline in {time.perf_counter() - t0:.1f} s")
    heat = hm.HEAT(model, tokenizer, hm.HEATConfig())
    t0 = time.perf_counter()
    result = heat.attribute(args.text)
    print(f"\ntext:   {args.text!r}\ntarget: {result.target!r}   ({time.perf_counter() - t0:.1f} s, "
          f"{result.cost.get('hvps', 0)} HVPs, {result.cost.get('forward_passes', 0)} forward passes)\n")
    print(f"{'rank':>4}  {'token':<14} {'Attr':>9} {'M':>7} {'S':>9} {'I':>8}")
    for rank, (i, tok, score) in enumerate(result.topk(8), 1):
        print(f"{rank:>4}  {tok!r:<14} {score:>9.4g} {float(result.transition[i]):>7.3f} "
              f"{float(result.curvature[i]):>9.4g} {float(result.information[i]):>8.4g}")
    html_path = os.path.join(args.out, "demo.html")
    png_path = os.path.join(args.out, "demo.png")
    result.save_html(html_path, title=args.text)
    result.save_png(png_path)
    print(f"\nwrote {html_path} and {png_path}")


if __name__ == "__main__":
    main()
