/** Sign-in with a token: `POST /api/v1/session` sets the HttpOnly session cookie; the token is not kept by the page. */
import { useState } from 'preact/hooks';
import { api, type Session } from '../api.js';

/** Props of {@link SignIn}. */
export interface SignInProps {
  readonly problem: string | undefined;
  readonly onSignedIn: (session: Session) => void;
}

/** The sign-in form. */
export function SignIn({ problem, onSignedIn }: SignInProps) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | undefined>(problem);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    if (token.trim().length === 0) return setError('Paste a token made with `taskfarm token create`.');
    setBusy(true);
    try {
      const session = await api.signIn(token.trim());
      setToken('');
      onSignedIn(session);
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="page signin">
      <h1>taskfarm</h1>
      <form onSubmit={(e) => void submit(e)} aria-label="Sign in">
        <label for="token">Token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="off"
          spellcheck={false}
          value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)}
          placeholder="tf_…"
        />
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        {error !== undefined ? (
          <p class="error" role="alert">
            {error}
          </p>
        ) : null}
        <p class="hint">
          Make a token on the manager's machine with <code>taskfarm token create --user NAME --key-file FILE</code>. The session is kept in an HttpOnly cookie;
          the page does not keep the token.
        </p>
      </form>
    </main>
  );
}
