/** A value JSON can express (what the job service stores and optimisers checkpoint). */
export type JsonValue = null | boolean | number | string | readonly JsonValue[] | { readonly [key: string]: JsonValue };
