--[[
 DSA-110 AOFlagger strategy (dsa110-assets), for AOFlagger >= 3.0.

 Input: one baseline's Stokes I amplitude |(XX + YY) / 2| as a single real image of
 ntimes (24 integrations of 12.9 s in a group) x nchannels (the whole 1311-1499 MHz band,
 16 subbands in ascending frequency), with the pipeline's data-quality flags (missing
 subbands, zero or non-finite samples, band edges) as the input mask.

 Why these choices:
 - Stokes I amplitude only: terrestrial RFI at DSA-110 is strong in both feeds, and one image
   instead of four halves the cost per baseline; the pipeline applies the flags to both
   correlations.
 - The time axis is short (24 samples), so the smooth background is fitted mostly along
   frequency: the Gaussian low-pass kernel is narrow in time and wide in frequency, on data
   averaged by 3 in frequency first. Sources and bandpass ripple vary slowly across 0.24 MHz
   channels; transmitters occupy one to a few channels.
 - Three passes of SumThreshold on the residual with a threshold that halves each pass (the
   approach of AOFlagger's generic strategy), then the scale-invariant rank operator to grow
   flags into the edges of what was found, and a time-step RMS test for broadband bursts.
 - Input flags are respected and kept (missing subbands stay flagged and are not used to
   estimate the background).
]]

aoflagger.require_min_version("3.0")

function execute(input)
  local base_threshold = 1.0 -- lower flags more
  local passes = 3 -- SumThreshold passes; the threshold halves on each
  local threshold_step = 2.0
  local frequency_averaging = 3 -- channels averaged before the background fit
  local sir_eta = 0.2 -- scale-invariant rank operator, time and frequency

  local with_input_flags = input:copy()
  local original = input:copy()
  local residual = input:copy()

  for pass = 1, passes - 1 do
    local factor = threshold_step ^ (passes - pass)
    local level = base_threshold * factor
    aoflagger.sumthreshold_masked(residual, original, level, level, true, true)

    -- Whole integrations (bursts) and whole channels (a bad channel, a transmitter).
    local by_channel = residual:copy()
    aoflagger.threshold_timestep_rms(residual, 3.5)
    aoflagger.threshold_channel_rms(by_channel, 3.0 * factor, true)
    residual:join_mask(by_channel)

    -- Fit the smooth background of the unflagged data and subtract it.
    residual:set_visibilities(original)
    residual:join_mask(original)
    local coarse = aoflagger.downsample(residual, 1, frequency_averaging, true)
    aoflagger.low_pass_filter(coarse, 5, 21, 2.5, 5.0)
    aoflagger.upsample(coarse, residual, 1, frequency_averaging)
    local difference = original - residual
    difference:set_mask(residual)
    residual = difference
  end

  aoflagger.sumthreshold_masked(residual, original, base_threshold, base_threshold, true, true)
  residual:join_mask(original)
  input:join_mask(residual)

  aoflagger.scale_invariant_rank_operator_masked(input, with_input_flags, sir_eta, sir_eta)
  aoflagger.threshold_timestep_rms(input, 4.0)
  input:flag_nans()
end
