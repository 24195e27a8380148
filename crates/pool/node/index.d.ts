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

/** Fails a task with a kind of your choosing (the Rust caller's `TaskError::kind`). */
export class TaskError extends Error {
  /** `detail`, if given, is sent instead of the stack. */
  constructor(message: string, kind?: string, detail?: string);
  kind: string;
  detail?: string;
}

/** A failed task's error as it goes to the pool. */
export interface ErrorParts {
  /** The error's `code` if a non-empty string, else its `name` (or class name). */
  kind: string;
  /** `err.message`, or the thrown value as text. */
  message: string;
  /** `err.stack`, kept to at most `DETAIL_MAX` bytes of UTF-8. */
  detail?: string;
}

/** A thrown value as the pool's error: kind, message, stack. */
export function errorParts(error: unknown): ErrorParts;

/** The text the Rust caller sees: `"<kind>: <message>"`. */
export function describeError(error: unknown): string;

export const DEFAULT_MAX_LINE: number;

/** The most bytes of an error's detail (its stack) sent: 16 KiB. */
export const DETAIL_MAX: number;
/** The kind of a result that cannot be sent (over the frame limit, or with no JSON form): `"Unsendable"`, the Rust side's `TaskError::UNSENDABLE`. */
export const UNSENDABLE: "Unsendable";
