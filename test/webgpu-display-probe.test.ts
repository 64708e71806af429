/**
 * The webgpu backend gives libwayland a private runtime folder when XDG_RUNTIME_DIR is unset, so
 * a Vulkan driver's display probe cannot print an "error:" line on a run that succeeds.
 */
import { statSync } from 'node:fs';
import { expect } from 'chai';
import { quietDisplayProbe } from '../src/backends/webgpu/webgpu-device.js';

describe('webgpu: display probe without XDG_RUNTIME_DIR', function () {
  it('an unset XDG_RUNTIME_DIR becomes a private (0700) empty folder', function () {
    const env: NodeJS.ProcessEnv = {};
    const dir = quietDisplayProbe(env);
    expect(dir).to.be.a('string');
    expect(env.XDG_RUNTIME_DIR).to.equal(dir);
    const st = statSync(dir!);
    expect(st.isDirectory()).to.equal(true);
    expect(st.mode & 0o777).to.equal(0o700);
  });

  it('a folder the user set, or a Wayland display, is left alone', function () {
    const set: NodeJS.ProcessEnv = { XDG_RUNTIME_DIR: '/run/user/1000' };
    expect(quietDisplayProbe(set)).to.equal(undefined);
    expect(set.XDG_RUNTIME_DIR).to.equal('/run/user/1000');
    const wayland: NodeJS.ProcessEnv = { WAYLAND_DISPLAY: 'wayland-0' };
    expect(quietDisplayProbe(wayland)).to.equal(undefined);
    expect(wayland.XDG_RUNTIME_DIR).to.equal(undefined);
  });
});
