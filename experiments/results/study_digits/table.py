"""Markdown tables of a study.json (jaxnas study): per estimator the medians over the
probes, and per probe the references and Hessians.

  python experiments/results/study_digits/table.py DIR/study.json
"""

import json
import sys


def main(path: str) -> None:
    d = json.load(open(path))
    s, records = d["summary"], d["records"]
    print("| estimator | cos unrolled | cos implicit | argmax agr. unrolled | argmax agr. implicit "
          "| <g2',g2> > 0 vs unrolled | vs implicit | median s | x first order |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, e in s["estimators"].items():
        u, i = e["unrolled"], e["implicit"]
        print(f"| {name} | {u['median_cosine']:.3f} | {i['median_cosine']:.3f} | "
              f"{u['median_argmax_agreement']:.2f} | {i['median_argmax_agreement']:.2f} | "
              f"{u['fraction_g2_positive']:.2f} | {i['fraction_g2_positive']:.2f} | "
              f"{e['median_seconds']:.3f} | {e['seconds_vs_first_order']:.1f} |")
    if "fd_eps" in s:
        print("\n| fd eps (x 1/||grad_w L_v||) | median relative error vs exact |\n|---|---|")
        for eps, v in sorted(s["fd_eps"].items(), key=lambda kv: float(kv[0])):
            print(f"| {eps} | {v['median_relative_error_vs_exact']:.3f} |")
    print("\n| step | implicit residual | solver | HVPs | cos(unrolled, implicit) | "
          "H min | H max | Neumann radius | ‖∇w L_t‖ | alpha-Hessian max |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in records:
        ref, wh = r["references"], r["weight_hessian"]
        print(f"| {r['step']} | {ref['implicit_relative_residual']:.3f} | "
              f"{ref.get('implicit_solver', '')} | {ref.get('implicit_hvps', '')} | "
              f"{ref['unrolled_vs_implicit']['cosine']:.3f} | {wh['min']:.2f} | "
              f"{wh['max']:.2f} | {wh['neumann_radius']:.3f} | {r['train_grad_norm']:.3f} | "
              f"{r['arch_hessian']['max']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1])
