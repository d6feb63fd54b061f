import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { KilnError } from "@kiln/shared";

import { NoiseSource } from "../src/engine/noise.js";
import { fma32 } from "../src/engine/noise-avx2.js";
import { noiseHelper, type NoiseStream } from "../src/engine/noise-helper.js";

/**
 * torch.randn on an x86-64 CPU with AVX2 (ATen's `normal_fill_16_AVX2`), checked bit for bit against values
 * printed by real PyTorch at full precision (float32 printed as the shortest float64 repr, via `.tolist()`),
 * quoted from public test code. A float32 parsed from such a print is the exact float32 torch produced.
 */

// Source 1: olafurjohannsson/kjarni, crates/kjarni-transformers/src/cpu/rope/tests.rs, `test_rope_pytorch_parity`:
// RoPE inputs Q and K of shape [1, 2, 4, 8] "from the Python script" (golden values), which are
// `torch.manual_seed(42); q = torch.randn(1, 2, 4, 8); k = torch.randn(1, 2, 4, 8)` — 4 blocks of 16 each.
const KJARNI_Q = [
  1.9269152879714966, 1.4872840642929077, 0.9007171988487244, -2.1055209636688232, 0.6784184575080872,
  -1.2345448732376099, -0.04306747764348984, -1.6046669483184814, -0.7521352767944336, 1.6487230062484741,
  -0.3924786448478699, -1.4036071300506592, -0.7278813123703003, -0.5594301819801331, -0.7688388824462891,
  0.7624453902244568, 1.6423169374465942, -0.1595974713563919, -0.4973975419998169, 0.439589262008667,
  -0.7581311464309692, 1.078317642211914, 0.8008005619049072, 1.680620551109314, 1.27912437915802, 1.2964228391647339,
  0.610466480255127, 1.334737777709961, -0.2316243201494217, 0.041759490966796875, -0.2515752911567688,
  0.859858512878418, -1.3846737146377563, -0.8712361454963684, -0.223365917801857, 1.7173614501953125,
  0.3188803195953369, -0.42451897263526917, 0.3057209253311157, -0.7745925188064575, -1.5575724840164185,
  0.9956361055374146, -0.8797858357429504, -0.6011420488357544, -1.2741512060165405, 2.1227850914001465,
  -1.234653115272522, -0.4879138767719269, -0.9138230085372925, -0.6581372618675232, 0.07802387326955795,
  0.5258087515830994, -0.48799172043800354, 1.1913690567016602, -0.8140076398849487, -0.7359927892684937,
  -1.4032478332519531, 0.03600366786122322, -0.06347727030515671, 0.6756148934364319, -0.0978068932890892,
  1.8445940017700195, -1.184537410736084, 1.3835493326187134,
];
const KJARNI_K = [
  1.4451338052749634, 0.8564125299453735, 2.218075752258301, 0.5231655240058899, 0.34664666652679443,
  -0.19733144342899323, -1.0545889139175415, 1.2779955863952637, -0.1721901297569275, 0.5237884521484375,
  0.056621819734573364, 0.4262961447238922, 0.575005054473877, -0.6417241096496582, -2.2063984870910645,
  -0.7508030533790588, 0.01086814422160387, -0.33874234557151794, -1.3406795263290405, -0.5853705406188965,
  0.5361881256103516, 0.5246226191520691, 1.1412016153335571, 0.05164359509944916, 0.7439519762992859,
  -0.4815843999385834, -1.0494661331176758, 0.603898823261261, -1.7222950458526611, -0.827768862247467,
  1.334702968597412, 0.48353928327560425, -2.5095443725585938, 0.4880010485649109, 0.7845868468284607,
  0.02864718623459339, 0.640755295753479, 0.5832474231719971, 1.0669267177581787, -0.4501533806324005,
  -0.18526747822761536, 0.7527588605880737, 0.4047577977180481, 0.17846599221229553, 0.2649095058441162,
  1.2731683254241943, -0.0013108636485412717, -0.30360376834869385, -1.457029104232788, -0.10233523696660995,
  -0.5991530418395996, 0.4770564138889313, 0.7261772155761719, 0.09115186333656311, -0.3890652060508728,
  0.5279164910316467, -0.012685478664934635, 0.24083632230758667, 0.13253536820411682, 0.7642406225204468,
  1.095009684562683, 0.3398909568786621, 0.7199674844741821, 0.41140761971473694,
];

// Source 2: openvinotoolkit/openvino (commit 30f98c4ae5a20f87b2a95ac420f555046cee5351),
// src/plugins/template/tests/functional/op_reference/scaled_dot_product_attention.cpp, `generateParamsWithSink`:
// q_data [2, 3, 4, 5], k_data [2, 1, 4, 5]. They are `torch.manual_seed(0)` draws laid out as (S, B, H, D) and
// permuted to (B, H, S, D): q = randn(4, 2, 3, 5) (120 values: 7 blocks and the tail re-fill), then
// k = randn(4, 2, 1, 5) (40 values: 2 blocks and the tail re-fill).
const OPENVINO_Q = [
  -1.1258398294448853, -1.152360200881958, -0.2505785822868347, -0.4338788092136383, 0.8487103581428528,
  0.946298360824585, -0.843676745891571, -0.6135830879211426, 0.03159274160861969, -0.4926769733428955,
  -1.5311843156814575, -1.2341350317001343, 1.8197252750396729, -0.5515286922454834, -0.5692480802536011,
  -1.881689190864563, -0.049727022647857666, -1.0449786186218262, -0.9565008282661438, 0.03353185951709747,
  0.6920091509819031, -0.31601276993751526, -2.1152193546295166, 0.32227492332458496, -1.2633347511291504,
  0.2484147548675537, 0.4396958351135254, 0.11241118609905243, 0.6407923698425293, 0.441156268119812,
  0.9199714064598083, 1.1108161211013794, 1.2898740768432617, -1.4781739711761475, 2.567232847213745,
  0.7100865840911865, 1.6458669900894165, -1.3601689338684082, 0.34456542134284973, 0.5198677182197571,
  0.34998318552970886, 0.30813392996788025, 0.11984150856733322, 1.237657904624939, 1.1167771816253662,
  -0.10230965167284012, 0.7924439907073975, -0.28966769576072693, 0.05250748619437218, 0.5228604674339294,
  -0.4731197953224182, 0.3355507552623749, -1.6293259859085083, -0.54974365234375, -0.47983425855636597,
  -2.6133224964141846, -1.6964744329452515, -0.22824178636074066, 0.2799549996852875, -0.7015236020088196,
  -0.2472781538963318, -1.3526537418365479, -1.6959311962127686, 0.5666506290435791, 0.7935083508491516,
  2.3022053241729736, -1.4688938856124878, -1.586688756942749, -0.6730899214744568, 0.8728312253952026,
  -0.4996815323829651, -1.0669803619384766, 1.114939570426941, -0.14067143201828003, 0.8057535886764526,
  1.0366867780685425, -0.6036701202392578, -1.2787652015686035, 0.0929502323269844, -0.6660997271537781,
  0.5988394618034363, -1.5550950765609741, -0.3413603901863098, 1.85300612449646, 0.750189483165741, 1.0553574562072754,
  0.17784371972084045, -0.23033547401428223, -0.3917543888092041, 0.5432947278022766, -0.09334823489189148,
  0.6870502233505249, -0.8383153676986694, 0.0008918217499740422, 0.8418940901756287, 0.6080471873283386,
  -0.7300198674201965, 1.3750379085540771, 0.659631073474884, 0.4765571057796478, -0.5854975581169128,
  -0.1733967512845993, 0.18347793817520142, 1.3893661499023438, 1.586334228515625, -0.3951575458049774,
  -0.4462171792984009, 0.7440207004547119, 1.5209795236587524, 3.4105026721954346, -0.4000341594219208,
  1.0394619703292847, 0.3581531047821045, -0.24600094556808472, 2.302516460418701, -1.0163074731826782,
  0.18036697804927826, 0.10833186656236649, -0.7548232674598694, 0.24431852996349335,
];
const OPENVINO_K = [
  1.1403506994247437, -0.08988206833600998, 0.7297962307929993, -1.8453190326690674, -0.025019939988851547,
  -1.1427778005599976, 0.03758539631962776, 2.6962764263153076, 1.235763669013977, 0.5428298115730286,
  -1.6115024089813232, -0.47944778203964233, -0.14335104823112488, -0.3172946274280548, -0.06614404916763306,
  1.5735383033752441, 0.7814299464225769, -1.0786579847335815, -0.720909833908081, 1.4707926511764526,
  1.3693809509277344, 2.6570231914520264, 0.9851194024085999, 0.37718191742897034, 1.101234793663025,
  0.5255303382873535, -0.8293668627738953, -1.4072566032409668, 1.6268466711044312, 0.1722732037305832,
  -0.3583550751209259, -1.5615617036819458, -0.3546432852745056, 1.0810725688934326, 0.13147805631160736,
  0.2756350040435791, 0.6667810678482056, -0.9943896532058716, -1.189363956451416, -1.1959494352340698,
];

// Source 3: a public CosyVoice port's parity test (`test_fixed_noise_is_the_source_seed_zero_table`), quoting
// CosyVoice's flow-matching noise table `torch.manual_seed(0); rand_noise = torch.randn([1, 80, 50 * 300])`,
// rand_noise[0, 1, :3]: values 15000…15002, deep in the stream (block 937, its sine half).
const COSYVOICE_ROW1 = [0.869179368019104, 0.5761968493461609, -0.41195306181907654];

/** (S, B, H, D)-ordered draws read in (B, H, S, D) order. */
function permuteSBHD(flat: Float32Array, s: number, b: number, h: number, d: number): number[] {
  const out: number[] = [];
  for (let ib = 0; ib < b; ib++)
    for (let ih = 0; ih < h; ih++)
      for (let is = 0; is < s; is++) for (let id = 0; id < d; id++) out.push(flat[((is * b + ib) * h + ih) * d + id]!);
  return out;
}

/** Bit-exact comparison; returns the indices that differ. */
function mismatches(actual: ArrayLike<number>, expected: readonly number[]): number[] {
  assert.equal(actual.length, expected.length);
  const bad: number[] = [];
  for (let i = 0; i < expected.length; i++) if (!Object.is(actual[i], Math.fround(expected[i]!))) bad.push(i);
  return bad;
}

describe("torch.randn, AVX2 kernel: bit-exact against published torch output", () => {
  it("seed 42, randn(1,2,4,8) twice (kjarni's RoPE golden inputs): all 128 values", () => {
    const g = new NoiseSource(42);
    assert.deepEqual(mismatches(g.randn(64), KJARNI_Q), []);
    assert.deepEqual(mismatches(g.randn(64), KJARNI_K), []);
  });

  it("seed 0, randn(4,2,3,5) then randn(4,2,1,5) (OpenVINO's SDPA reference inputs): all 160 values", () => {
    const g = new NoiseSource(0);
    assert.deepEqual(mismatches(permuteSBHD(g.randn(120), 4, 2, 3, 5), OPENVINO_Q), []);
    assert.deepEqual(mismatches(permuteSBHD(g.randn(40), 4, 2, 1, 5), OPENVINO_K), []);
  });

  it("seed 0, values 15000…15002 of a long draw (CosyVoice's fixed noise table)", () => {
    // Blocks are independent of the tensor's length except for the tail: 938 whole blocks cover index 15002.
    const x = new NoiseSource(0).randn(938 * 16);
    assert.deepEqual(mismatches(x.subarray(15000, 15003), COSYVOICE_ROW1), []);
  });

  it("the scalar kernel does not match those bytes (the check can fail)", () => {
    const g = new NoiseSource(42, "scalar");
    const bad = mismatches(g.randn(64), KJARNI_Q).length + mismatches(g.randn(64), KJARNI_K).length;
    assert.ok(bad > 20, `the scalar kernel differs from torch's AVX2 output in ${bad} of 128 values`);
    // …and by no more than the last bits.
    const a = new NoiseSource(7, "scalar").randn(4096);
    const b = new NoiseSource(7, "avx2").randn(4096);
    let differ = 0;
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(a[i]! - b[i]!);
      assert.ok(d <= 4e-6 * Math.max(1, Math.abs(b[i]!)), `value ${i}: scalar ${a[i]} vs avx2 ${b[i]}`);
      if (d > 0) differ++;
    }
    assert.ok(differ > 0.2 * a.length && differ < 0.6 * a.length, `${differ} of ${a.length} values differ`);
  });

  it("tensors below 16 values take the double-precision path whatever the kernel", () => {
    assert.deepEqual(new NoiseSource(3, "avx2").randn(15), new NoiseSource(3, "scalar").randn(15));
  });

  it("rejects an unknown kernel name", () => {
    assert.throws(
      () => new NoiseSource(1, "sse" as never),
      (e: unknown) => e instanceof KilnError && e.code === "noise_kernel_invalid",
    );
  });

  it("the step-noise helper thread continues a generator with its kernel", async () => {
    const helper = await noiseHelper();
    assert.ok(helper, "the helper thread started");
    for (const kernel of ["avx2", "scalar"] as const) {
      const main = new NoiseSource(11, kernel);
      main.randn(100);
      const stream: NoiseStream = helper.open([main], 256);
      stream.request();
      const drawn: Float32Array = Float32Array.from(stream.take());
      stream.close();
      assert.deepEqual(drawn, main.randn(256), kernel);
    }
  });
});

// ---- fma32: one rounding, checked against exact rational arithmetic ----

/** Exact float32 of `m·2^e` for a BigInt m (round half to even), for normal float32 results. */
function roundToFloat32(m: bigint, e: number): number {
  if (m === 0n) return 0;
  const negative = m < 0n;
  let a = negative ? -m : m;
  const shift = a.toString(2).length - 24;
  if (shift > 0) {
    const rest = a & ((1n << BigInt(shift)) - 1n);
    const half = 1n << BigInt(shift - 1);
    a >>= BigInt(shift);
    if (rest > half || (rest === half && (a & 1n) === 1n)) a += 1n;
    e += shift;
  }
  const v = Number(a) * 2 ** e;
  return negative ? -v : v;
}

/** A float32 as an integer significand and exponent: x = m·2^e exactly. */
function decompose(x: number): [bigint, number] {
  let e = 0;
  let m = x;
  while (!Number.isInteger(m)) {
    m *= 2;
    e -= 1;
  }
  return [BigInt(m), e];
}

function exactFma32(a: number, b: number, c: number): number {
  const [ma, ea] = decompose(a);
  const [mb, eb] = decompose(b);
  const [mc, ec] = decompose(c);
  const ep = ea + eb;
  const e = Math.min(ep, ec);
  return roundToFloat32(((ma * mb) << BigInt(ep - e)) + (mc << BigInt(ec - e)), e);
}

describe("fma32 (float32 fused multiply-add, rounded once)", () => {
  it("handles the double-rounding case: the float64 sum lands on a float32 midpoint", () => {
    // a·b = 2⁻²⁴ − 2⁻⁵⁴: a·b + c = (1 + 2⁻²³ + 2⁻²⁴) − 2⁻⁵⁴. Rounded to float64 first it becomes the midpoint
    // 1 + 2⁻²³ + 2⁻²⁴, which ties to even (1 + 2⁻²²); rounded once it is just below, so 1 + 2⁻²³.
    const a = Math.fround(1 + 2 ** -15);
    const b = Math.fround(2 ** -24 * (1 - 2 ** -15));
    const c = Math.fround(1 + 2 ** -23);
    assert.equal(Math.fround(a * b + c), 1 + 2 ** -22, "the naive float64-then-float32 result");
    assert.equal(fma32(a, b, c), 1 + 2 ** -23);
    assert.equal(fma32(a, b, c), exactFma32(a, b, c));
    // Negated: rounding to nearest is symmetric.
    assert.equal(fma32(-a, b, -c), -(1 + 2 ** -23));
  });

  it("agrees with exact rational arithmetic on random and near-tie inputs", () => {
    let state = 12345;
    const rand = () => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return state / 2 ** 32;
    };
    const f = (scale: number) => Math.fround((rand() * 2 - 1) * scale);
    for (let i = 0; i < 4000; i++) {
      const a = f(4);
      const b = f(4);
      // c near −a·b (cancellation) half the time, else an arbitrary value.
      const c = i % 2 === 0 ? Math.fround(-(a * b) * (1 + (rand() - 0.5) * 2 ** -20)) : f(8);
      if (a === 0 || b === 0 || c === 0) continue;
      assert.equal(fma32(a, b, c), exactFma32(a, b, c), `fma32(${a}, ${b}, ${c})`);
    }
    for (let i = 0; i < 2000; i++) {
      // Built ties: c + a·b within a few float64 ulps of a float32 midpoint.
      const k = 1 + Math.floor(rand() * 2 ** 23);
      const c = Math.fround(1 + k * 2 ** -23);
      const j = 1 + Math.floor(rand() * 2 ** 10);
      const a = Math.fround(1 + j * 2 ** -20);
      const b = Math.fround(2 ** -24 * (1 - j * 2 ** -20));
      assert.equal(fma32(a, b, c), exactFma32(a, b, c), `fma32(${a}, ${b}, ${c})`);
      assert.equal(fma32(-a, b, -c), exactFma32(-a, b, -c), `fma32(${-a}, ${b}, ${-c})`);
    }
  });
});
