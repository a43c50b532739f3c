// Minimal typings for the part of eslint-scope that taskfarm uses (it ships none).
declare module 'eslint-scope' {
  export interface Reference {
    readonly identifier: { readonly name: string; readonly start?: number };
  }
  export interface Scope {
    readonly through: readonly Reference[];
  }
  export interface ScopeManager {
    readonly globalScope: Scope | null;
  }
  export function analyze(ast: object, options?: { ecmaVersion?: number; sourceType?: 'script' | 'module'; childVisitorKeys?: object }): ScopeManager;
}
