// ESLint (flat config), part of `npm run check`: typescript-eslint with type information, plus the
// import boundaries of docs/ARCHITECTURE.md (its component table):
//   - a component reaches another only through that component's index.ts (util/, errors.ts and
//     log.ts are shared by all and imported file by file);
//   - a component imports only the components the table allows it;
//   - grpc-js only in src/protocol/, bonjour-service only in src/discovery/mdns.ts;
//   - services/ and client/ import only src/index.ts.
// Import cycles are checked by madge (`npm run check:cycles`). Run without --cache: a type-aware
// result depends on files other than the one linted, so a per-file cache can hide findings.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

/**
 * Which components each component of src/ may import (besides errors.ts, log.ts and util/), as in
 * docs/ARCHITECTURE.md. Keep the two in step.
 */
const components = {
  skeleton: [],
  protocol: [],
  discovery: [],
  security: [],
  store: [],
  worker: ['protocol', 'discovery', 'security'],
  farm: ['protocol', 'discovery', 'security', 'skeleton'], // + worker in local-link.ts (below)
  optimize: ['skeleton', 'farm'],
  // optimize: the optimisation job kind (branch optserve, src/service/optimize-kind.ts).
  service: ['store', 'farm', 'security', 'skeleton', 'protocol', 'optimize'],
};

const up = (depth) => String.raw`\.\./`.repeat(depth);
const grpcOutsideProtocol = { regex: '^@grpc/', message: 'Only src/protocol/ imports grpc-js (the wire is the protocol component).' };
const bonjourOutsideMdns = { regex: '^bonjour-service$', message: 'Only src/discovery/mdns.ts imports bonjour-service.' };

/**
 * The no-restricted-imports rule for the files of `component` that sit `depth` folders below src/
 * (src/farm/pool.ts: 1; src/service/http/server.ts: 2). `allow` adds components (exceptions),
 * `exempt` lists exact specifiers allowed past the index rule.
 */
function boundaries(component, depth, { allow = [], exempt = [], packages = [grpcOutsideProtocol, bonjourOutsideMdns] } = {}) {
  const allowed = new Set([component, ...components[component], ...allow]);
  const forbidden = Object.keys(components).filter((c) => !allowed.has(c));
  const exemptions = exempt.map((s) => `(?!${s.replaceAll('.', String.raw`\.`)}$)`).join('');
  return {
    'no-restricted-imports': [
      'error',
      {
        patterns: [
          {
            regex: String.raw`^${exemptions}${up(depth)}(?!util/)[a-z-]+/(?!index\.js$)`,
            message: 'Import another component through its index.ts (docs/ARCHITECTURE.md: components reach each other only through it).',
          },
          ...(forbidden.length === 0
            ? []
            : [
                {
                  regex: String.raw`^${up(depth)}(${forbidden.join('|')})(/|\.js$)`,
                  message: `src/${component}/ may import only ${[...components[component], ...allow].join(', ') || 'errors, log and util'} (docs/ARCHITECTURE.md, component table).`,
                },
              ]),
          ...packages,
        ],
      },
    ],
  };
}

/** Config objects for every file of `component`, at each depth below src/<component>/. */
function componentConfigs(component, options = {}) {
  return [1, 2, 3].map((depth) => ({
    files: [`src/${component}/${'*/'.repeat(depth - 1)}*.ts`],
    rules: boundaries(component, depth, options),
  }));
}

const noGrpc = [bonjourOutsideMdns];
const noBonjour = [grpcOutsideProtocol];

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'node_modules/**',
      'coverage/**',
      'src/protocol/generated/**',
      // The dashboard's build output (branch dash: Vite writes dist/dashboard/; anything it may
      // leave beside its sources).
      'client/dashboard/dist/**',
      'bench/results/**',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: { ...globals.node },
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true, allowNullish: true }],
      // A `let` read by a closure before its one assignment (handlers wired before the object exists) cannot be a const.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
  // ---- The library: no console (a Logger is injected), and the import boundaries.
  { files: ['src/**/*.ts'], rules: { 'no-console': 'error' } },
  {
    // The job stores implement the async JobStore contract; SQLite's driver is synchronous, so most bodies never await.
    files: ['src/store/**/*.ts'],
    rules: { '@typescript-eslint/require-await': 'off' },
  },
  {
    // src/index.ts (the public API) and the shared top-level files: components only through their index.ts.
    files: ['src/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { regex: String.raw`^\./(?!util/)[a-z-]+/(?!index\.js$)`, message: 'Export a component through its index.ts.' },
            grpcOutsideProtocol,
            bonjourOutsideMdns,
          ],
        },
      ],
    },
  },
  ...componentConfigs('skeleton'),
  ...componentConfigs('protocol', { packages: noGrpc }),
  ...componentConfigs('discovery'),
  { files: ['src/discovery/mdns.ts'], rules: boundaries('discovery', 1, { packages: noBonjour }) },
  ...componentConfigs('security'),
  ...componentConfigs('store'),
  ...componentConfigs('worker'),
  {
    // The body of a worker thread is loaded in every thread: it takes the packed-batch codec
    // straight from its file, so that threads do not load grpc-js through protocol/index.ts.
    files: ['src/worker/thread.ts'],
    rules: boundaries('worker', 1, { exempt: ['../protocol/batch.js'] }),
  },
  ...componentConfigs('farm'),
  // Local threads run the daemon's executor: the one place the client side imports the worker.
  { files: ['src/farm/local-link.ts'], rules: boundaries('farm', 1, { allow: ['worker'] }) },
  ...componentConfigs('optimize'),
  ...componentConfigs('service'),
  {
    // Thin executables: argv/env → options, signals, exit codes; the library only through its API.
    files: ['services/**/*.ts', 'client/**/*.ts', 'client/**/*.tsx'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { regex: String.raw`^\.\./(\.\./)*src/(?!index\.js$)`, message: 'services/ and client/ import only from src/index.ts.' },
            { regex: String.raw`^\.\./(\.\./)*dist/`, message: 'Import the sources, not the build output.' },
            grpcOutsideProtocol,
            bonjourOutsideMdns,
          ],
        },
      ],
    },
  },
  {
    // The web dashboard (branch dash): browser code, type-checked with client/dashboard/tsconfig.json
    // (the project service finds it); its Vite config and build scripts run in Node.
    files: ['client/dashboard/src/**/*.{ts,tsx}'],
    languageOptions: { globals: { ...globals.browser } },
    rules: { 'no-console': 'error' },
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      // Tests poke at internals and build hostile inputs on purpose.
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      // expect(obj.method) and vi.spyOn pass methods around unbound on purpose.
      '@typescript-eslint/unbound-method': 'off',
      // Fakes and fixtures implement async contracts (JobService, JobStore, input sources) with synchronous bodies.
      '@typescript-eslint/require-await': 'off',
      'no-restricted-syntax': [
        'error',
        { selector: "CallExpression[callee.object.name=/^(it|describe|test)$/][callee.property.name='only']", message: '.only is not allowed' },
      ],
    },
  },
  // Plain JavaScript (fixtures, scripts, configs): the recommended rules without type information.
  { files: ['**/*.js', '**/*.mjs'], ...tseslint.configs.disableTypeChecked },
);
