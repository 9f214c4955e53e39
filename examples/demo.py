"""`make demo`: attribute a sentence of our own with the real SmolLM2-135M, offline.

Prints the greedy next token, the top context tokens and their components, and writes an HTML and a PNG heatmap.
By default HEAT runs as ``HEATConfig()``: M·I, the gate times the KL information (no Hessian term; issue 15);
``--preset exact`` adds eq. 5's S (exact HVPs, slower) and its column.
"""

from __future__ import annotations

import argparse
import os
import time

import heat_module as hm
from heat_module.config import PRESETS

TEXT = "Maya packed her umbrella because the radio said it would rain, but she left it on the bus, so she got"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--preset", default="default", choices=list(PRESETS),
                        help="HEATConfig.preset: 'default' = HEATConfig() (M·I); 'exact' / 'fisher' / ... add S")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    model, tokenizer = hm.load_model("smollm2")
    print(f"loaded SmolLM2-135M-Instruct offline in {time.perf_counter() - t0:.1f} s")
    config = hm.HEATConfig.preset(args.preset)
    heat = hm.HEAT(model, tokenizer, config)
    t0 = time.perf_counter()
    result = heat.attribute(args.text)
    print(f"\ntext:   {args.text!r}\ntarget: {result.target!r}   ({time.perf_counter() - t0:.1f} s, "
          f"{result.cost.get('hvps', 0)} HVPs, {result.cost.get('forward_passes', 0)} forward passes)\n")
    has_s = result.curvature is not None  # HEATConfig() (β = 0) computes no S
    print(f"HEATConfig.preset({args.preset!r}): Attr = M·(β S + γ I), β = {config.beta:g}, γ = {config.gamma:g}\n")
    print(f"{'rank':>4}  {'token':<14} {'Attr':>9} {'M':>7}" + (f" {'S':>9}" if has_s else "") + f" {'I':>8}")
    for rank, (i, tok, score) in enumerate(result.topk(8), 1):
        s = f" {float(result.curvature[i]):>9.4g}" if has_s else ""
        print(f"{rank:>4}  {tok!r:<14} {score:>9.4g} {float(result.transition[i]):>7.3f}{s} "
              f"{float(result.information[i]):>8.4g}")
    html_path = os.path.join(args.out, "demo.html")
    png_path = os.path.join(args.out, "demo.png")
    result.save_html(html_path, title=args.text)
    result.save_png(png_path)
    print(f"\nwrote {html_path} and {png_path}")


if __name__ == "__main__":
    main()
