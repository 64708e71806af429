/**
 * The RoPE angle table every backend that applies rotary embeddings on the host uses:
 * angle(t, i) = positions[t] · θ^(−2i/D) for i < D/2, with cos and sin taken in float64
 * (angles reach ~1000 rad, where float32 pow/sin drift). A backend rounds the values to its
 * own storage once; the reference backend uses them as they are.
 */

/** cos and sin [T, D/2] (row-major: t · D/2 + i), float64. */
export function ropeTable(positions: Int32Array, theta: number, d: number): { cos: Float64Array; sin: Float64Array } {
  const half = d / 2, t = positions.length;
  const cos = new Float64Array(t * half), sin = new Float64Array(t * half);
  for (let ti = 0; ti < t; ti++) {
    for (let i = 0; i < half; i++) {
      const angle = positions[ti] * Math.pow(theta, (-2 * i) / d);
      cos[ti * half + i] = Math.cos(angle);
      sin[ti * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}
