"""SciPy's differential_evolution on the standard test functions, for bench/optimize-quality.ts.

Reads a JSON request on stdin: {"functions": [name, ...], "dimension": n, "budget": evaluations,
"seeds": [..], "popsize": 15}; writes one JSON object: {"version": scipy version, "results":
{name: [{"seed": s, "fun": f, "nfev": k}, ...]}}. SciPy's defaults otherwise (best1bin, mutation
(0.5, 1) dithered per generation, recombination 0.7, Latin hypercube, immediate updating), with
polish=False and tol=atol=0 so that every run uses the whole budget: maxiter = budget // (popsize * n) - 1.
Run it with Debian's python (/usr/bin/python3 with python3-scipy).
"""
import json
import sys

import numpy as np
import scipy
from scipy.optimize import differential_evolution


def sphere(x):
    return float(np.sum(x * x))


def rosenbrock(x):
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


def rastrigin(x):
    return float(10.0 * len(x) + np.sum(x * x - 10.0 * np.cos(2.0 * np.pi * x)))


def ackley(x):
    n = len(x)
    return float(-20.0 * np.exp(-0.2 * np.sqrt(np.sum(x * x) / n)) - np.exp(np.sum(np.cos(2.0 * np.pi * x)) / n) + 20.0 + np.e)


def griewank(x):
    i = np.arange(1, len(x) + 1)
    return float(1.0 + np.sum(x * x) / 4000.0 - np.prod(np.cos(x / np.sqrt(i))))


def schwefel(x):
    return float(418.9828872724338 * len(x) - np.sum(x * np.sin(np.sqrt(np.abs(x)))))


FUNCTIONS = {
    "sphere": (sphere, 5.12),
    "rosenbrock": (rosenbrock, 5.0),
    "rastrigin": (rastrigin, 5.12),
    "ackley": (ackley, 32.768),
    "griewank": (griewank, 600.0),
    "schwefel": (schwefel, 500.0),
}


def main():
    req = json.load(sys.stdin)
    n = int(req["dimension"])
    popsize = int(req.get("popsize", 15))
    maxiter = int(req["budget"]) // (popsize * n) - 1
    out = {}
    for name in req["functions"]:
        f, b = FUNCTIONS[name]
        runs = []
        for seed in req["seeds"]:
            r = differential_evolution(f, [(-b, b)] * n, maxiter=maxiter, popsize=popsize, tol=0, atol=0, polish=False, seed=seed)
            runs.append({"seed": seed, "fun": float(r.fun), "nfev": int(r.nfev)})
        out[name] = runs
    json.dump({"version": scipy.__version__, "results": out}, sys.stdout)


if __name__ == "__main__":
    main()
