// The explanation drawn on the playing review clip: a canvas over (or, side by side, beside) the <video>,
// redrawn for every presented frame from the event's per-frame maps (GET /events/{id}/maps, contract B).
// Player time t is recording time clip_start + t; the map frame nearest that time is colour-mapped and
// upscaled smoothly by the canvas (the maps are tiny, long side <= 32).
export const METHODS = [
  { id: "none", name: "None" },
  { id: "grad_cam", name: "Grad-CAM" },
  { id: "guided_backprop", name: "Guided Backprop" },
  { id: "guided_grad_cam", name: "Guided Grad-CAM" },
];

// A perceptually ordered dark-blue → red → yellow ramp ("inferno"-like): the strongest evidence is the
// brightest, and the ramp reads without relying on red/green.
const STOPS = [[0, [0, 0, 4]], [0.25, [87, 16, 110]], [0.5, [188, 55, 84]], [0.75, [249, 142, 9]],
               [1, [252, 255, 164]]];
const LUT = buildLut();
// Opacity per map value: 0 stays see-through, weak evidence is lifted a little (gamma 0.7) so it still shows
// at the default opacity, the strongest is opaque.
const ALPHA = Uint8ClampedArray.from({ length: 256 }, (_, v) => 255 * (v / 255) ** 0.7);

function buildLut() {
  const lut = new Uint8ClampedArray(256 * 3);
  for (let v = 0; v < 256; v++) {
    const x = v / 255;
    const i = Math.max(0, STOPS.findIndex(([at]) => at >= x) - 1);
    const [a, ca] = STOPS[i];
    const [b, cb] = STOPS[Math.min(i + 1, STOPS.length - 1)];
    const f = b > a ? (x - a) / (b - a) : 0;
    for (let c = 0; c < 3; c++) lut[v * 3 + c] = ca[c] + (cb[c] - ca[c]) * f;
  }
  return lut;
}

/** Base64 of uint8 bytes → Uint8Array. */
function decode(b64) {
  const text = atob(b64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

/** Index of the time in ascending ``times`` nearest ``t``. */
export function nearest(times, t) {
  let lo = 0;
  let hi = times.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (times[mid] < t) lo = mid + 1;
    else hi = mid;
  }
  return lo > 0 && Math.abs(times[lo - 1] - t) <= Math.abs(times[lo] - t) ? lo - 1 : lo;
}

/** Median spacing of ascending ``times`` (the maps' frame step); null for fewer than two. */
function medianStep(times) {
  if (times.length < 2) return null;
  const steps = times.slice(1).map((t, i) => t - times[i]).sort((a, b) => a - b);
  return steps[steps.length >> 1];
}

const LONE_FRAME = 0.5;  // seconds either side a single stored map frame stands for

/** The map frame to draw at recording time ``t``: the nearest, or -1 when ``t`` lies more than one frame step
 * outside the maps' span. The review clip has a few seconds of padding before and after the clips whose maps
 * are stored; there the nearest map is of another moment and would be drawn on the wrong picture. */
export function frameAt(times, t) {
  if (!times?.length || t == null) return -1;
  const step = medianStep(times) ?? LONE_FRAME;
  if (t < times[0] - step || t > times[times.length - 1] + step) return -1;
  return nearest(times, t);
}

export class VideoOverlay {
  /** ``video``: the review clip; ``canvas``: drawn over it or beside it; ``stage``: their container. */
  constructor({ video, canvas, stage }) {
    Object.assign(this, { video, canvas, stage });
    this.maps = null;
    this.clipStart = null;
    this.method = "grad_cam";
    this.opacity = 0.6;
    this.sideBySide = false;
    this.small = document.createElement("canvas");  // one map frame at its own resolution
    this.frameShown = -1;
    this.onFrame = this.onFrame.bind(this);
    for (const name of ["timeupdate", "seeked", "loadeddata", "play"]) video.addEventListener(name, () => this.draw());
    new ResizeObserver(() => this.draw()).observe(video);
    this.watchFrames();
  }

  watchFrames() {
    // requestVideoFrameCallback: one call per presented frame while playing; timeupdate covers the rest
    if ("requestVideoFrameCallback" in this.video) this.video.requestVideoFrameCallback(this.onFrame);
  }

  /** Per presented frame: its own media time (metadata.mediaTime), exact where currentTime may lag or lead. */
  onFrame(_now, metadata) {
    this.draw(metadata?.mediaTime);
    this.watchFrames();
  }

  /** The maps of a new event (null: none stored) and the recording time of the clip's t=0. */
  setMaps(maps, clipStart) {
    this.clipStart = clipStart;
    this.maps = maps && {
      width: maps.width, height: maps.height, times: maps.times,
      methods: Object.fromEntries(Object.entries(maps.methods).map(([k, v]) => [k, decode(v)])),
    };
    this.small.width = maps?.width || 1;
    this.small.height = maps?.height || 1;
    this.frameShown = -1;
    this.draw();
  }

  available(method) {
    return method === "none" || Boolean(this.maps?.methods[method] && this.clipStart != null);
  }

  setMethod(method) { this.method = method; this.draw(); }
  setOpacity(opacity) { this.opacity = opacity; this.draw(); }
  setSideBySide(on) {
    this.sideBySide = on;
    this.stage.classList.toggle("side-by-side", on);
    this.draw();
  }

  /** Recording time of what the player shows now. */
  recordingTime(mediaTime = this.video.currentTime) {
    return this.clipStart == null ? null : this.clipStart + mediaTime;
  }

  /** ``mediaTime``: the presented frame's time (from requestVideoFrameCallback), else the player's time. */
  draw(mediaTime = this.video.currentTime) {
    const { canvas, video } = this;
    const box = video.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(box.width * ratio));
    const height = Math.max(1, Math.round(box.height * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    if (this.sideBySide && video.readyState >= 2) ctx.drawImage(video, 0, 0, width, height);
    const bytes = this.maps?.methods[this.method];
    const t = this.recordingTime(mediaTime);
    this.frameShown = -1;
    canvas.dataset.frame = "";
    if (this.method === "none" || !bytes || t == null) return;
    const { width: w, height: h, times } = this.maps;
    const frame = frameAt(times, t);
    if (frame < 0) return;  // no map for this moment (the clip's padding): draw nothing rather than another's
    const image = this.small.getContext("2d").createImageData(w, h);
    const offset = frame * w * h;
    for (let i = 0; i < w * h; i++) {
      const v = bytes[offset + i];
      image.data[i * 4] = LUT[v * 3];
      image.data[i * 4 + 1] = LUT[v * 3 + 1];
      image.data[i * 4 + 2] = LUT[v * 3 + 2];
      image.data[i * 4 + 3] = ALPHA[v];
    }
    this.small.getContext("2d").putImageData(image, 0, 0);
    ctx.save();
    ctx.globalAlpha = this.opacity;
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(this.small, 0, 0, width, height);
    ctx.restore();
    this.frameShown = frame;
    canvas.dataset.frame = String(frame);  // which map frame is on screen (read by the browser tests)
  }
}
