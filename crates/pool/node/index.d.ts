/** What a handler gets besides its request. */
export interface TaskContext {
  /** Aborts when the pool cancels the task (or the chunk). */
  signal: AbortSignal;
  /** The pool's id of the task or chunk. */
  id: number;
  /** The item's position in its chunk (only for chunk items). */
  index?: number;
}

export interface ServeOptions {
  /** The longest message accepted, in bytes (default 16 MiB, forkyard-ipc's frame limit). */
  maxLine?: number;
}

/** Serves the pool's tasks until drained, then exits the process. */
export function serve<Req = any, Resp = any>(
  handler: (request: Req, context: TaskContext) => Resp | Promise<Resp>,
  options?: ServeOptions,
): void;

/** Fails a task with a kind of your choosing: `"<kind>: <message>"`. */
export class TaskError extends Error {
  constructor(message: string, kind?: string);
  kind: string;
}

/** The text a failed task answers with: `"<kind>: <message>"`. */
export function describeError(error: unknown): string;

export const DEFAULT_MAX_LINE: number;
