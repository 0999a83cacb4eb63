/**
 * Minimal SVG line charts (no dependency): log or linear axes, several series per panel, several
 * panels per picture. Enough for the bench's two charts; not a general plotting library.
 */

export interface Series {
  name: string;
  color: string;
  points: [number, number][];
}

export interface Panel {
  title: string;
  xLabel: string;
  yLabel: string;
  xLog?: boolean;
  yLog?: boolean;
  /** Fixed y range; default: the data's. */
  yRange?: [number, number];
  series: Series[];
}

const PANEL_WIDTH = 460;
const PLOT_HEIGHT = 220;
const LEGEND_LINE = 16;
const MARGIN = { left: 64, right: 16, top: 32, bottom: 48 };

/** One SVG picture with `panels` side by side. */
export function chart(panels: Panel[], caption: string): string {
  const width = PANEL_WIDTH * panels.length;
  // The legend sits above the plot, never on the curves; every panel gets room for the longest one.
  const legendHeight = Math.max(...panels.map((p) => p.series.length)) * LEGEND_LINE;
  const panelHeight = MARGIN.top + legendHeight + PLOT_HEIGHT + MARGIN.bottom;
  const height = panelHeight + 28;
  const body = panels.map((panel, i) => `<g transform="translate(${i * PANEL_WIDTH},0)">${renderPanel(panel, legendHeight)}</g>`).join('\n');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    body,
    `<text x="${width / 2}" y="${height - 8}" text-anchor="middle" fill="#555">${escape(caption)}</text>`,
    `</svg>`,
    '',
  ].join('\n');
}

function renderPanel(panel: Panel, legendHeight: number): string {
  const top = MARGIN.top + legendHeight;
  const bottom = top + PLOT_HEIGHT;
  const all = panel.series.flatMap((s) => s.points);
  // A log axis starts at the smallest positive value; zeros are drawn at its left edge.
  const xs = all.map(([x]) => x).filter((x) => !(panel.xLog ?? false) || x > 0);
  const ys = all.map(([, y]) => y).filter((y) => !(panel.yLog ?? false) || y > 0);
  const x = axis(Math.min(...xs), Math.max(...xs), panel.xLog ?? false, MARGIN.left, PANEL_WIDTH - MARGIN.right);
  const [yMin, yMax] = panel.yRange ?? [Math.min(...ys), Math.max(...ys)];
  const y = axis(yMin, yMax, panel.yLog ?? false, bottom, top);
  const parts: string[] = [];
  parts.push(`<text x="${PANEL_WIDTH / 2}" y="20" text-anchor="middle" font-weight="bold">${escape(panel.title)}</text>`);
  for (const tick of x.ticks) {
    const px = x.scale(tick);
    parts.push(`<line x1="${px}" y1="${top}" x2="${px}" y2="${bottom}" stroke="#eee"/>`);
    parts.push(`<text x="${px}" y="${bottom + 16}" text-anchor="middle" fill="#333">${formatTick(tick)}</text>`);
  }
  for (const tick of y.ticks) {
    const py = y.scale(tick);
    parts.push(`<line x1="${MARGIN.left}" y1="${py}" x2="${PANEL_WIDTH - MARGIN.right}" y2="${py}" stroke="#eee"/>`);
    parts.push(`<text x="${MARGIN.left - 6}" y="${py + 4}" text-anchor="end" fill="#333">${formatTick(tick)}</text>`);
  }
  parts.push(
    `<rect x="${MARGIN.left}" y="${top}" width="${PANEL_WIDTH - MARGIN.left - MARGIN.right}" height="${PLOT_HEIGHT}" fill="none" stroke="#999"/>`,
  );
  parts.push(`<text x="${(MARGIN.left + PANEL_WIDTH - MARGIN.right) / 2}" y="${bottom + 36}" text-anchor="middle">${escape(panel.xLabel)}</text>`);
  parts.push(
    `<text transform="translate(16,${(top + bottom) / 2}) rotate(-90)" text-anchor="middle">${escape(panel.yLabel)}</text>`,
  );
  panel.series.forEach((series, i) => {
    const path = series.points.map(([px, py], j) => `${j === 0 ? 'M' : 'L'}${x.scale(px).toFixed(1)},${y.scale(py).toFixed(1)}`).join(' ');
    parts.push(`<path d="${path}" fill="none" stroke="${series.color}" stroke-width="2"/>`);
    if (series.points.length <= 12) {
      for (const [px, py] of series.points) parts.push(`<circle cx="${x.scale(px).toFixed(1)}" cy="${y.scale(py).toFixed(1)}" r="3" fill="${series.color}"/>`);
    }
    const ly = MARGIN.top + 10 + i * LEGEND_LINE;
    parts.push(`<rect x="${MARGIN.left + 8}" y="${ly - 9}" width="12" height="3" fill="${series.color}"/>`);
    parts.push(`<text x="${MARGIN.left + 24}" y="${ly - 4}" fill="#222">${escape(series.name)}</text>`);
  });
  return parts.join('\n');
}

interface Axis {
  scale(value: number): number;
  ticks: number[];
}

function axis(min: number, max: number, log: boolean, from: number, to: number): Axis {
  if (log) {
    const lo = Math.floor(Math.log10(Math.max(min, 1e-9)));
    const hi = Math.ceil(Math.log10(Math.max(max, min * 10, 1e-9)));
    const span = Math.max(hi - lo, 1);
    const ticks = Array.from({ length: span + 1 }, (_, i) => 10 ** (lo + i));
    return { scale: (v) => from + ((Math.log10(Math.max(v, 10 ** lo)) - lo) / span) * (to - from), ticks };
  }
  const step = niceStep((max - min || Math.abs(max) || 1) / 5);
  const lo = Math.floor(min / step) * step;
  const hi = Math.ceil(max / step) * step || step;
  const ticks: number[] = [];
  for (let v = lo; v <= hi + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  return { scale: (v) => from + ((v - lo) / (hi - lo || 1)) * (to - from), ticks };
}

function niceStep(raw: number): number {
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10) * power;
}

function formatTick(value: number): string {
  if (value >= 1e6 && Number.isInteger(value / 1e6)) return `${value / 1e6}M`;
  if (value >= 1e3 && Number.isInteger(value / 1e3)) return `${value / 1e3}k`;
  return String(Number(value.toPrecision(3)));
}

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Empirical CDF points of `samples` (x ascending, y = share ≤ x in %), thinned to ≤ `maxPoints`. */
export function cdf(samples: readonly number[], maxPoints = 200): [number, number][] {
  const sorted = [...samples].sort((a, b) => a - b);
  const step = Math.max(1, Math.floor(sorted.length / maxPoints));
  const points: [number, number][] = [];
  for (let i = 0; i < sorted.length; i += step) points.push([sorted[i]!, ((i + 1) * 100) / sorted.length]);
  points.push([sorted[sorted.length - 1]!, 100]);
  return points;
}
