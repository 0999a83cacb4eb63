/**
 * Webhook: sends one HTTP request as an experiment step — announce the experiment in a chat,
 * toggle a feature flag, scale something via an internal API.
 *
 * Instantaneous: the request is sent by `start` and the step is over when it answers, so there is
 * no status, no stop and no state kept by the extension (the agent carries it between prepare and
 * start).
 */
import { defineAction, ExtensionError, z } from 'actionkit-runtime/action';
import { formatMs, httpUrl } from '../lib/params.js';

const METHODS = ['GET', 'POST', 'PUT', 'DELETE'] as const;
/** How much of an unexpected answer's body goes into the error detail. */
const MAX_DETAIL_CHARS = 500;

const Config = z.object({
  url: httpUrl,
  method: z.enum(METHODS).default('POST'),
  body: z.string().optional(),
  headers: z.array(z.object({ key: z.string().trim().min(1), value: z.string() })).default([]),
}).superRefine((config, ctx) => {
  if (config.method === 'GET' && config.body !== undefined && config.body !== '') {
    ctx.addIssue({ code: 'custom', path: ['body'], message: 'a GET request cannot carry a body' });
  }
  for (const [index, { key, value }] of config.headers.entries()) {
    try {
      new Headers([[key, value]]); // rejects what fetch would reject at start: better to fail at prepare
    } catch {
      ctx.addIssue({ code: 'custom', path: ['headers', index], message: `"${key}" is not a valid HTTP header` });
    }
  }
});

interface State {
  url: string;
  method: (typeof METHODS)[number];
  body: string | null;
  headers: [string, string][];
}

export default defineAction({
  description: {
    id: 'com.example.actionkit.webhook',
    label: 'Call webhook',
    version: '1.0.0',
    description: 'Sends one HTTP request, e.g. to notify a chat channel or toggle a feature flag. Fails the step when the answer is not 2xx.',
    kind: 'other',
    category: 'integration',
    technology: 'HTTP',
    timeControl: 'instantaneous',
    parameters: [
      { name: 'url', label: 'URL', type: 'url', required: true },
      {
        name: 'method',
        label: 'Method',
        type: 'string',
        defaultValue: 'POST',
        required: true,
        optionsOnly: true,
        options: METHODS.map((method) => ({ label: method, value: method })),
      },
      { name: 'body', label: 'Body', type: 'textarea', description: 'Sent as `application/json` when it parses as JSON, as `text/plain` otherwise (unless you set Content-Type).' },
      { name: 'headers', label: 'Headers', type: 'key_value', advanced: true },
    ],
  },
  config: Config,

  prepare({ config }) {
    const headers: [string, string][] = config.headers.map(({ key, value }) => [key, value]);
    const body = config.body === undefined || config.body === '' ? null : config.body;
    if (body !== null && !headers.some(([key]) => key.toLowerCase() === 'content-type')) {
      headers.push(['Content-Type', isJson(body) ? 'application/json' : 'text/plain; charset=utf-8']);
    }
    const state: State = { url: config.url, method: config.method, body, headers };
    return { state };
  },

  async start(state, ctx) {
    const sentAt = performance.now();
    let response: Response;
    try {
      // ctx.signal fires when the agent's Request-Timeout (or the handler timeout) runs out.
      response = await fetch(state.url, { method: state.method, headers: state.headers, body: state.body, signal: ctx.signal });
    } catch (error) {
      const cause = (error as { cause?: { code?: unknown; message?: unknown } }).cause;
      const reason = typeof cause?.code === 'string' ? cause.code : error instanceof Error ? error.message : String(error);
      throw new ExtensionError(`Webhook ${state.method} ${state.url} could not be sent: ${reason}`, { status: 'errored', cause: error });
    }
    const text = await response.text();
    const took = formatMs(performance.now() - sentAt);
    const answer = `${state.method} ${state.url} answered ${response.status} ${response.statusText} in ${took}`;
    if (!response.ok) {
      // The receiver rejected the call: the step did not do its job, which is a failure, not a crash.
      return { messages: [{ message: answer, level: 'error' }], error: { title: `Webhook failed: ${answer}`, detail: text.slice(0, MAX_DETAIL_CHARS), status: 'failed' } };
    }
    return { messages: [{ message: answer }] };
  },
});

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}
