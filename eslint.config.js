// ESLint (flat config): typescript-eslint with type information, plus the project's import
// boundaries (components reach each other only through their index.ts; grpc-js only in protocol/,
// bonjour-service only in discovery/mdns.ts).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

const component = (depth) =>
  // From src/<component>/<file>.ts (depth 1) or src/<component>/<sub>/<file>.ts (depth 2): another
  // component's files other than its index.js.
  depth === 1 ? String.raw`^\.\./(?!util/)[a-z-]+/(?!index\.js$)[^/]+` : String.raw`^\.\./\.\./(?!util/)[a-z-]+/(?!index\.js$)[^/]+`;

const boundaries = (depth, extra = []) => ({
  'no-restricted-imports': [
    'error',
    {
      patterns: [
        { regex: component(depth), message: 'Import another component through its index.ts.' },
        ...extra,
      ],
    },
  ],
});

const grpcOutsideProtocol = { regex: String.raw`^@grpc/`, message: 'Only src/protocol/ imports grpc-js (the wire is the protocol component).' };
const bonjourOutsideMdns = { regex: '^bonjour-service$', message: 'Only src/discovery/mdns.ts imports bonjour-service.' };

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'src/protocol/generated/**', 'client/dashboard/dist/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: { ...globals.node },
      parserOptions: { projectService: { allowDefaultProject: ['*.js', '*.mjs', 'scripts/*.mjs'] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-explicit-any': 'error',
      // Errors from the network or user code are `unknown`; we narrow them where we use them.
      '@typescript-eslint/only-throw-error': 'off',
      '@typescript-eslint/prefer-promise-reject-errors': 'off',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true, allowNullish: true }],
      'no-console': 'off',
    },
  },
  { files: ['src/**/*.ts'], rules: { 'no-console': 'error' } },
  { files: ['src/*/*.ts'], rules: boundaries(1, [grpcOutsideProtocol, bonjourOutsideMdns]) },
  { files: ['src/*/*/*.ts'], rules: boundaries(2, [grpcOutsideProtocol, bonjourOutsideMdns]) },
  { files: ['src/protocol/**/*.ts'], rules: boundaries(1, [bonjourOutsideMdns]) },
  { files: ['src/discovery/mdns.ts'], rules: boundaries(1, [grpcOutsideProtocol]) },
  {
    files: ['services/**/*.ts', 'client/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ regex: String.raw`^\.\./(\.\./)*src/(?!index\.js$)`, message: 'services/ and client/ import only from src/index.ts.' }] },
      ],
    },
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
      '@typescript-eslint/unbound-method': 'off',
      'no-restricted-syntax': ['error', { selector: "CallExpression[callee.object.name=/^(it|describe|test)$/][callee.property.name='only']", message: '.only is not allowed' }],
    },
  },
  { files: ['**/*.js', '**/*.mjs'], ...tseslint.configs.disableTypeChecked },
);
