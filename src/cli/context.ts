import type { BaseContext } from 'clipanion';

/** What every command gets from main: streams, environment, and the interrupt signal. */
export type IbContext = BaseContext & {
  env: NodeJS.ProcessEnv;
  signal: AbortSignal;
  /** Whether a person can answer a prompt. */
  interactive: boolean;
};
