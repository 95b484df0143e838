"""NB201 supernet formulations (mixed_op loop, fused, scan): compile and median step of jit(value_and_grad) in weights and alphas.

Run: python experiments/results/nb201_collapse/bench_mixed_op.py C N BATCH HW
"""
import json, sys, time

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.supernet.nb201 import NB201Supernet, uniform_arch

C, N, B, HW = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
x = jax.random.normal(jax.random.key(0), (B, HW, HW, 1)); y = jnp.arange(B) % 10
out = {}
for mo in ("scan", "fused", "loop"):
  if True:
    m = NB201Supernet(C=C, N=N, num_classes=10, mixed_op=mo)
    v = m.init(jax.random.key(1), x, uniform_arch())
    def loss(p, a):
        lg, upd = m.apply({"params": p, "batch_stats": v["batch_stats"]}, x, jax.nn.softmax(a), train=True, mutable=["batch_stats"])
        return -jnp.mean(jax.nn.log_softmax(lg)[jnp.arange(B), y])
    g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    a = jnp.zeros((6, 5))
    t = time.perf_counter(); c = g.lower(v["params"], a).compile(); tc = time.perf_counter() - t
    jax.block_until_ready(c(v["params"], a))
    ts = []
    for _ in range(10):
        t = time.perf_counter(); jax.block_until_ready(c(v["params"], a)); ts.append(time.perf_counter() - t)
    out.setdefault(mo, []).append({"compile_s": round(tc, 2), "step_ms_median": round(1e3 * float(np.median(ts)), 2)})
print(json.dumps({"C": C, "N": N, "batch": B, "hw": HW, **out}))
