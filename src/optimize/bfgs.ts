import { InvalidOptionError } from '../errors.js';
import { describeValue, expectInteger, expectNumber } from '../util/validate.js';
import type { CurrentPopulation, JsonValue, Optimizer, OptimizerConfig, OptimizerDone, Population, ResolvedSpace } from './types.js';

/** Options of {@link Bfgs}. */
export interface BfgsOptions {
  /**
   * Finite-difference gradient: `'central'` (2 points per parameter, error O(h²)) or `'forward'`
   * (1 point per parameter, O(h)). On a farm the points of one gradient are evaluated in parallel,
   * so central differences cost evaluations, not time, while there are idle workers.
   * @default 'central'
   */
  readonly gradient?: 'central' | 'forward';
  /**
   * Relative difference step: parameter i is moved by `step · max(1, |x_i|)` (at most a quarter of
   * its range).
   * @default ∛ε ≈ 6.1e-6 (central), √ε ≈ 1.5e-8 (forward)
   */
  readonly step?: number;
  /** Converged when the projected gradient's largest component is at most this. @default 1e-5 */
  readonly gtol?: number;
  /** Step lengths tried at once along each search direction (one generation of the line search). @default 4 */
  readonly lineSearchPoints?: number;
}

type Stencil = { readonly mode: 'central' | 'ahead2' | 'behind2' | 'ahead' | 'behind'; readonly h: number };

interface BfgsState {
  readonly kind: 'bfgs';
  readonly version: 1;
  readonly dimension: number;
  readonly iteration: number;
  readonly x: number[];
  readonly f: number | null;
  readonly g: number[] | null;
  readonly h: number[][];
  readonly scaled: boolean;
  readonly prev: { readonly x: number[]; readonly g: number[] } | null;
  readonly phase: 'gradient' | 'line';
  readonly points: number[][];
  readonly stencil: Stencil[];
  readonly withX: boolean;
  readonly d: number[];
  readonly alphas: number[];
  readonly reset: boolean;
  readonly fallback: { readonly x: number[]; readonly f: number } | null;
  readonly done: OptimizerDone | null;
}

const EPS = Number.EPSILON;
const C1 = 1e-4; // Armijo's sufficient-decrease constant

const dot = (a: readonly number[], b: readonly number[]): number => a.reduce((s, v, i) => s + v * (b[i] as number), 0);
const normInf = (a: readonly number[]): number => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
const identity = (n: number): number[][] => Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? 1 : 0)));

/**
 * Quasi-Newton BFGS with finite-difference gradients, for smooth objectives, where each
 * generation is a set of points evaluated in parallel (PARK: "quasi-Newton methods where multiple
 * evaluations are required to estimate the descent direction"):
 *
 * 1. a **gradient generation**: the difference points around the current point x (2n central or
 *    n forward; plus x itself in the very first generation);
 * 2. a **line-search generation**: `lineSearchPoints` steps `x + α·d` at once along the
 *    quasi-Newton direction d = −H·g (α = α₀, α₀/2, α₀/4, …); the lowest cost satisfying
 *    Armijo's condition is taken; if none does, the next generation tries shorter steps.
 *
 * Bounds (projected, L-BFGS-B-like but simpler): trial points are clamped into the box;
 * parameters at a bound whose gradient points outwards are held (their component of d is zero)
 * and do not count in the convergence test (the projected gradient); difference points never
 * leave the box (one-sided second-order differences next to a bound). H starts as the identity,
 * scaled by sᵀy/yᵀy after the first step; an update without positive curvature is skipped; a
 * direction that is not a descent resets H. It converges (`next()` returns done) when the
 * projected gradient's largest component is at most `gtol`; it gives up (done, not converged)
 * when even steepest descent finds no lower cost, at the precision of the differences.
 *
 * Deterministic (no randomness: the seed is unused). Integer parameters are refused.
 * The option `populationSize` does not apply (the populations are n or 2n, and `lineSearchPoints`).
 */
export class Bfgs implements Optimizer {
  readonly name = 'bfgs';
  readonly #central: boolean;
  readonly #step: number;
  readonly #gtol: number;
  readonly #linePoints: number;
  #space: ResolvedSpace | undefined;
  #n = 0;
  #iteration = 0;
  #x: number[] = [];
  #f: number | undefined;
  #g: number[] | undefined;
  #h: number[][] = [];
  #scaled = false;
  #prev: { x: number[]; g: number[] } | undefined;
  #phase: 'gradient' | 'line' = 'gradient';
  #points: number[][] = [];
  #stencil: Stencil[] = [];
  #withX = false;
  #d: number[] = [];
  #alphas: number[] = [];
  #reset = false;
  #fallback: { x: number[]; f: number } | undefined;
  #done: OptimizerDone | undefined;

  constructor(options: BfgsOptions = {}) {
    const gradient: unknown = options.gradient ?? 'central';
    if (gradient !== 'central' && gradient !== 'forward')
      throw new InvalidOptionError(`Expected \`gradient\` to be 'central' or 'forward', got ${describeValue(gradient)}`);
    this.#central = gradient === 'central';
    const step = options.step ?? (this.#central ? Math.cbrt(EPS) : Math.sqrt(EPS));
    expectNumber('step', step, EPS, 0.1);
    this.#step = step;
    const gtol = options.gtol ?? 1e-5;
    expectNumber('gtol', gtol, 0);
    this.#gtol = gtol;
    const points = options.lineSearchPoints ?? 4;
    expectInteger('lineSearchPoints', points, 1, 64);
    this.#linePoints = points;
  }

  /** Nothing to configure: BFGS uses no randomness. */
  configure(_config: OptimizerConfig): void {}

  #setSpace(space: ResolvedSpace): void {
    const i = space.integer.indexOf(true);
    if (i >= 0) throw new InvalidOptionError(`The 'bfgs' optimizer needs continuous parameters, but ${space.names[i]} is integer (space.integer): use 'de'`);
    this.#space = space;
    this.#n = space.dimension;
  }

  /** The first gradient generation around `space.x0` (or the centre of the box), including that point. */
  start(space: ResolvedSpace): Population {
    this.#setSpace(space);
    this.#x = space.x0 !== undefined ? [...space.x0] : space.lower.map((lo, i) => (lo + (space.upper[i] as number)) / 2);
    this.#h = identity(this.#n);
    this.#prepareGradient(true);
    return this.#points.map((p) => [...p]);
  }

  update(population: readonly (readonly number[])[], costs: readonly number[]): void {
    if (costs.length !== this.#points.length || population.length !== this.#points.length) {
      throw new Error(`Bfgs.update() got ${costs.length} costs for a population of ${this.#points.length}`);
    }
    if (this.#phase === 'gradient') this.#afterGradient(costs);
    else this.#afterLine(costs);
  }

  next(): Population | OptimizerDone {
    if (this.#done !== undefined) return this.#done;
    return this.#points.map((p) => [...p]);
  }

  /** The current point and its cost (one member: the spread rules do not apply to BFGS). */
  current(): CurrentPopulation | undefined {
    return this.#f === undefined ? undefined : { x: [[...this.#x]], costs: [this.#f] };
  }

  state(): JsonValue {
    const s: BfgsState = {
      kind: 'bfgs',
      version: 1,
      dimension: this.#n,
      iteration: this.#iteration,
      x: [...this.#x],
      f: this.#f ?? null,
      g: this.#g === undefined ? null : [...this.#g],
      h: this.#h.map((r) => [...r]),
      scaled: this.#scaled,
      prev: this.#prev === undefined ? null : { x: [...this.#prev.x], g: [...this.#prev.g] },
      phase: this.#phase,
      points: this.#points.map((p) => [...p]),
      stencil: [...this.#stencil],
      withX: this.#withX,
      d: [...this.#d],
      alphas: [...this.#alphas],
      reset: this.#reset,
      fallback: this.#fallback === undefined ? null : { x: [...this.#fallback.x], f: this.#fallback.f },
      done: this.#done ?? null,
    };
    return s as unknown as JsonValue;
  }

  restore(space: ResolvedSpace, state: JsonValue): void {
    const s = state as unknown as Partial<BfgsState> | null;
    if (s === null || typeof s !== 'object' || s.kind !== 'bfgs' || s.version !== 1) {
      throw new InvalidOptionError('Cannot restore BFGS from this checkpoint: it is not a version-1 BFGS state');
    }
    this.#setSpace(space);
    const st = s as BfgsState;
    if (
      st.dimension !== space.dimension ||
      !Array.isArray(st.x) ||
      st.x.length !== space.dimension ||
      !Array.isArray(st.h) ||
      st.h.length !== space.dimension
    ) {
      throw new InvalidOptionError(`Cannot restore BFGS from this checkpoint: it is for ${String(st.dimension)} parameters, the space has ${space.dimension}`);
    }
    this.#iteration = st.iteration;
    this.#x = [...st.x];
    this.#f = st.f ?? undefined;
    this.#g = st.g === null ? undefined : [...st.g];
    this.#h = st.h.map((r) => [...r]);
    this.#scaled = st.scaled;
    this.#prev = st.prev === null ? undefined : { x: [...st.prev.x], g: [...st.prev.g] };
    this.#phase = st.phase;
    this.#points = st.points.map((p) => [...p]);
    this.#stencil = st.stencil.map((t) => ({ ...t }));
    this.#withX = st.withX;
    this.#d = [...st.d];
    this.#alphas = [...st.alphas];
    this.#reset = st.reset;
    this.#fallback = st.fallback === null ? undefined : { x: [...st.fallback.x], f: st.fallback.f };
    this.#done = st.done ?? undefined;
  }

  // ---- gradient

  #prepareGradient(withX: boolean): void {
    const space = this.#space as ResolvedSpace;
    const x = this.#x;
    const points: number[][] = withX ? [[...x]] : [];
    const stencil: Stencil[] = [];
    const at = (i: number, v: number): number[] => {
      const p = [...x];
      p[i] = v;
      return p;
    };
    for (let i = 0; i < this.#n; i++) {
      const xi = x[i] as number;
      const lo = space.lower[i] as number;
      const hi = space.upper[i] as number;
      let h = Math.min(this.#step * Math.max(1, Math.abs(xi)), (hi - lo) / 4);
      h = xi + h - xi; // a step exactly representable at x
      if (this.#central) {
        if (xi + h <= hi && xi - h >= lo) {
          stencil.push({ mode: 'central', h });
          points.push(at(i, xi + h), at(i, xi - h));
        } else if (xi + 2 * h <= hi) {
          stencil.push({ mode: 'ahead2', h });
          points.push(at(i, xi + h), at(i, xi + 2 * h));
        } else {
          stencil.push({ mode: 'behind2', h });
          points.push(at(i, xi - h), at(i, xi - 2 * h));
        }
      } else if (xi + h <= hi) {
        stencil.push({ mode: 'ahead', h });
        points.push(at(i, xi + h));
      } else {
        stencil.push({ mode: 'behind', h });
        points.push(at(i, xi - h));
      }
    }
    this.#phase = 'gradient';
    this.#withX = withX;
    this.#stencil = stencil;
    this.#points = points;
  }

  #afterGradient(costs: readonly number[]): void {
    let k = 0;
    if (this.#withX) this.#f = costs[k++];
    const f0 = this.#f as number;
    const g = this.#stencil.map((s) => {
      const f1 = costs[k++] as number;
      if (s.mode === 'ahead') return (f1 - f0) / s.h;
      if (s.mode === 'behind') return (f0 - f1) / s.h;
      const f2 = costs[k++] as number;
      if (s.mode === 'central') return (f1 - f2) / (2 * s.h);
      if (s.mode === 'ahead2') return (-3 * f0 + 4 * f1 - f2) / (2 * s.h);
      return (3 * f0 - 4 * f1 + f2) / (2 * s.h);
    });
    if (!g.every(Number.isFinite)) {
      this.#done = {
        done: true,
        converged: false,
        message: 'BFGS stopped: the finite-difference gradient is not finite (penalised or huge costs next to the current point)',
      };
      return;
    }
    if (this.#prev !== undefined) this.#bfgsUpdate(this.#prev.x, this.#prev.g, g);
    this.#g = g;
    this.#iteration++;
    const pg = this.#projected(g);
    const pgNorm = normInf(pg);
    if (pgNorm <= this.#gtol) {
      this.#done = {
        done: true,
        converged: true,
        message: `BFGS converged: the projected gradient's largest component ${pgNorm.toPrecision(3)} ≤ gtol ${this.#gtol}`,
      };
      return;
    }
    this.#startLine(false);
  }

  #bfgsUpdate(xPrev: readonly number[], gPrev: readonly number[], g: readonly number[]): void {
    const n = this.#n;
    const s = this.#x.map((v, i) => v - (xPrev[i] as number));
    const y = g.map((v, i) => v - (gPrev[i] as number));
    const sy = dot(s, y);
    // Skip updates without (numerically) positive curvature: H stays positive definite.
    if (!(sy > 1e-10 * Math.sqrt(dot(s, s) * dot(y, y)))) return;
    const H = this.#h;
    if (!this.#scaled) {
      const gamma = sy / dot(y, y);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) (H[i] as number[])[j] = i === j ? gamma : 0;
      this.#scaled = true;
    }
    const rho = 1 / sy;
    const hy = H.map((row) => dot(row, y));
    const yhy = dot(y, hy);
    const c = rho * rho * yhy + rho;
    for (let i = 0; i < n; i++) {
      const row = H[i] as number[];
      for (let j = 0; j < n; j++)
        row[j] =
          (row[j] as number) - rho * ((hy[i] as number) * (s[j] as number) + (s[i] as number) * (hy[j] as number)) + c * (s[i] as number) * (s[j] as number);
    }
  }

  /** The gradient with the components of parameters held at a bound (pushing outwards) set to 0. */
  #projected(g: readonly number[]): number[] {
    const space = this.#space as ResolvedSpace;
    return g.map((gi, i) => {
      const xi = this.#x[i] as number;
      if ((xi <= (space.lower[i] as number) && gi > 0) || (xi >= (space.upper[i] as number) && gi < 0)) return 0;
      return gi;
    });
  }

  // ---- line search

  #startLine(steepest: boolean): void {
    const space = this.#space as ResolvedSpace;
    const g = this.#g as number[];
    const pg = this.#projected(g);
    if (steepest) {
      this.#h = identity(this.#n);
      this.#scaled = false;
    }
    let d = this.#h.map((row) => -dot(row, g)).map((v, i) => ((pg[i] as number) === 0 ? 0 : v));
    this.#reset = steepest;
    if (!(dot(pg, d) < 0)) {
      // Not a descent direction (H lost positive definiteness through the clamping): steepest descent.
      this.#h = identity(this.#n);
      this.#scaled = false;
      d = pg.map((v) => -v);
      this.#reset = true;
    }
    let alpha0 = 1;
    if (!this.#scaled) {
      // With an unscaled H the step has no natural length: start at a tenth of the box.
      for (let i = 0; i < this.#n; i++) {
        const di = Math.abs(d[i] as number);
        if (di > 0) alpha0 = Math.min(alpha0, (0.1 * ((space.upper[i] as number) - (space.lower[i] as number))) / di);
      }
    }
    this.#d = d;
    this.#fallback = undefined;
    this.#setAlphas(alpha0);
  }

  #setAlphas(alpha0: number): void {
    this.#phase = 'line';
    this.#alphas = Array.from({ length: this.#linePoints }, (_, k) => alpha0 / 2 ** k);
    this.#points = this.#alphas.map((a) => this.#stepTo(a));
  }

  #stepTo(alpha: number): number[] {
    const space = this.#space as ResolvedSpace;
    return this.#x.map((xi, i) => Math.min(space.upper[i] as number, Math.max(space.lower[i] as number, xi + alpha * (this.#d[i] as number))));
  }

  #afterLine(costs: readonly number[]): void {
    const f = this.#f as number;
    const g = this.#g as number[];
    let accepted = -1;
    for (let k = 0; k < costs.length; k++) {
      const c = costs[k] as number;
      const p = this.#points[k] as number[];
      const decrease = dot(
        g,
        p.map((v, i) => v - (this.#x[i] as number)),
      );
      if (c <= f + C1 * decrease && c < f && (accepted < 0 || c < (costs[accepted] as number))) accepted = k;
      if (c < f && (this.#fallback === undefined || c < this.#fallback.f)) this.#fallback = { x: [...p], f: c };
    }
    if (accepted >= 0) return this.#accept(this.#points[accepted] as number[], costs[accepted] as number);
    const last = this.#alphas[this.#alphas.length - 1] as number;
    const next = last / 2;
    const move = next * normInf(this.#d);
    if (move > 1e-12 * (1 + normInf(this.#x))) return this.#setAlphas(next);
    // Steps too short to matter: take the best decrease seen, else try steepest descent once, else give up.
    if (this.#fallback !== undefined) return this.#accept(this.#fallback.x, this.#fallback.f);
    if (!this.#reset) return this.#startLine(true);
    this.#done = {
      done: true,
      converged: false,
      message: `BFGS stopped: no step along the steepest descent lowers the cost (projected gradient's largest component ${normInf(this.#projected(g)).toPrecision(3)} > gtol ${this.#gtol}: the finite differences may be too noisy, or gtol too small)`,
    };
  }

  #accept(x: number[], f: number): void {
    this.#prev = { x: this.#x, g: this.#g as number[] };
    this.#x = [...x];
    this.#f = f;
    this.#fallback = undefined;
    this.#prepareGradient(false);
  }
}
