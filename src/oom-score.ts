/**
 * The extension's own OOM-killer adjustment, as the reference's extension-kit applies it at start-up
 * (`extruntime.AdjustOOMScoreAdj`, `STEADYBIT_EXTENSION_OOM_SCORE_ADJ`, default -998).
 *
 * Why: a memory attack fills the node on purpose. If the kernel's OOM killer then picked the
 * extension, nothing would be left to stop the attack and roll it back; a low `oom_score_adj`
 * makes the extension about the last process it picks. Protection is a favour, never a condition:
 * a process without the privilege to lower its score (root or CAP_SYS_RESOURCE) logs a warning and
 * serves anyway.
 *
 * Unlike the reference, nothing here moves CAP_SYS_RESOURCE from the permitted to the effective
 * capability set first (Node has no `capset`): a non-root extension needs the capability effective
 * already (e.g. `setcap cap_sys_resource=+ep` on its node binary, or the container's capabilities).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import type { Logger } from './logging.js';

/** Where Linux keeps a process's own OOM-killer adjustment (-1000 … 1000; -1000: never killed). */
const OOM_SCORE_ADJ_PATH = '/proc/self/oom_score_adj';

/**
 * Write `score` to `/proc/self/oom_score_adj` (Linux; elsewhere nothing happens). Never throws:
 * a refused write is logged as a warning naming the privilege it needs.
 */
export function adjustOomScoreAdj(score: number, logger: Logger): void {
  if (process.platform !== 'linux') {
    logger.debug({ oomScoreAdj: score, platform: process.platform }, 'oom_score_adj exists on Linux only; not adjusted');
    return;
  }
  const previous = currentOomScoreAdj();
  try {
    writeFileSync(OOM_SCORE_ADJ_PATH, `${score}\n`);
  } catch (error) {
    // An expected refusal, not a fault: its reason, without a stack.
    logger.warn(
      { oomScoreAdj: score, previous, reason: error instanceof Error ? error.message : String(error) },
      'could not adjust oom_score_adj (lowering it needs root or CAP_SYS_RESOURCE): under memory pressure the OOM killer may pick the extension; STEADYBIT_EXTENSION_OOM_SCORE_ADJ=off stops trying',
    );
    return;
  }
  logger.info({ oomScoreAdj: score, previous }, 'adjusted oom_score_adj (STEADYBIT_EXTENSION_OOM_SCORE_ADJ)');
}

/** The current value as the kernel shows it, or undefined when it cannot be read. */
function currentOomScoreAdj(): number | undefined {
  try {
    return Number(readFileSync(OOM_SCORE_ADJ_PATH, 'utf8').trim());
  } catch {
    return undefined;
  }
}
