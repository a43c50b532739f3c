/**
 * The dashboard's entry point: asks the manager who is signed in (the session cookie), then shows
 * the sign-in page or the app (overview, job page, worker page). Routes are paths; the manager
 * answers every non-API path with index.html.
 */
import { render } from 'preact';
import { useCallback, useEffect, useState } from 'preact/hooks';
import { LocationProvider, Router, Route, useLocation } from 'preact-iso';
import { ApiError, api, type Session } from './api.js';
import { SignIn } from './pages/sign-in.js';
import { Overview } from './pages/overview.js';
import { JobPage } from './pages/job.js';
import { WorkerPage } from './pages/worker.js';
import './style.css';

function NotFound() {
  return (
    <main class="page">
      <h1>Not found</h1>
      <p>
        This page does not exist. <a href="/">Back to the overview</a>.
      </p>
    </main>
  );
}

function Shell({ session, onSignOut }: { readonly session: Session; readonly onSignOut: () => void }) {
  const { route } = useLocation();
  const signOut = async (): Promise<void> => {
    try {
      await api.signOut();
    } finally {
      onSignOut();
      route('/');
    }
  };
  return (
    <>
      <header class="top">
        <a class="brand" href="/">
          taskfarm
        </a>
        <nav>
          <a href="/">Overview</a>
        </nav>
        <span class="who" data-testid="who">
          {session.user}
          {session.admin ? <span class="badge admin">admin</span> : null}
        </span>
        <button type="button" class="link" onClick={() => void signOut()}>
          Sign out
        </button>
      </header>
      <Router>
        <Route path="/" component={() => <Overview session={session} />} />
        <Route path="/jobs/:ticket" component={({ ticket }: { ticket: string }) => <JobPage ticket={ticket} session={session} />} />
        <Route path="/workers/:id" component={({ id }: { id: string }) => <WorkerPage id={id} session={session} />} />
        <Route default component={NotFound} />
      </Router>
    </>
  );
}

function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const check = useCallback(() => {
    api.session().then(
      (s) => {
        setSession(s);
        setProblem(undefined);
      },
      (err: unknown) => {
        setSession(null);
        if (!(err instanceof ApiError && err.status === 401)) setProblem(`The manager did not answer: ${(err as Error).message}`);
      },
    );
  }, []);
  useEffect(check, [check]);
  // Any request answered 401 later (the session expired, the token was revoked) signs the page out.
  useEffect(() => {
    const onUnauthorized = (): void => setSession(null);
    window.addEventListener('taskfarm:unauthorized', onUnauthorized);
    return () => window.removeEventListener('taskfarm:unauthorized', onUnauthorized);
  }, []);
  if (session === undefined) return <main class="page">Loading…</main>;
  return (
    <LocationProvider>
      {session === null ? <SignIn problem={problem} onSignedIn={setSession} /> : <Shell session={session} onSignOut={() => setSession(null)} />}
    </LocationProvider>
  );
}

const root = document.getElementById('app');
if (root !== null) render(<App />, root);
