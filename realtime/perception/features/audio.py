"""Audio featurizer: 16 kHz mono audio -> (Ta, 40) float32 frames at a fixed rate.

Per frame (one STFT of `audio_n_fft` samples every `audio_hop_length`, Hann window, centred):
20 MFCC, 12 chroma, RMS energy (dB), zero-crossing rate, spectral centroid / bandwidth /
rolloff (kHz), spectral flatness, F0 (log Hz, 0 when unvoiced) and a voicing score in [0, 1];
the same family of librosa features MMSA-FET extracts for CH-SIMS. Filter banks come from
librosa (ISC licence); the rest is numpy on one shared spectrogram, which keeps it far faster
than real time.

F0 is YIN (de Cheveigné & Kawahara 2002) computed here in vectorized numpy: the cumulative
mean normalized difference (CMND) per frame, the first dip under 0.1 in the lag range
(else the global minimum), parabolic refinement. Its CMND value at the chosen lag is the
aperiodicity; voicing = 1 - aperiodicity, and a frame is voiced when the aperiodicity is under
`audio_voicing_threshold` and the frame is louder than `audio_silence_db`. (pYIN's HMM is
about 100x slower and is not needed for frame features.)

Features are normalized with the per-dim mean/std stored in the FeaturizerConfig, then clipped;
NaN/inf never leaves `extract`.
"""

from __future__ import annotations

import numpy as np

from moodlens.core.errors import ConfigError, DataError
from moodlens.realtime.perception.features.config import FeaturizerConfig

YIN_TROUGH_THRESHOLD = 0.1
NORMALIZED_CLIP = 20.0


class AudioFeaturizer:
    def __init__(self, config: FeaturizerConfig | None = None):
        import librosa

        self.config = config or FeaturizerConfig()
        c = self.config
        self.n_fft, self.hop = c.audio_n_fft, c.audio_hop_length
        self.window = np.hanning(self.n_fft + 1)[:-1].astype(np.float32)  # periodic Hann
        self.freqs_khz = (np.fft.rfftfreq(self.n_fft, 1.0 / c.sample_rate) / 1000.0).astype(np.float32)
        self.mel_basis = librosa.filters.mel(sr=c.sample_rate, n_fft=self.n_fft, n_mels=c.audio_n_mels).astype(np.float32)
        # tuning=0: librosa would otherwise estimate tuning per call (slow and window-dependent).
        self.chroma_basis = librosa.filters.chroma(sr=c.sample_rate, n_fft=self.n_fft, tuning=0.0,
                                                   n_chroma=12).astype(np.float32)
        self.min_lag = max(2, int(np.floor(c.sample_rate / c.audio_f0_max_hz)))
        self.max_lag = int(np.ceil(c.sample_rate / c.audio_f0_min_hz))
        self.yin_width = self.n_fft - self.max_lag
        if self.yin_width < self.max_lag:
            raise ConfigError(f"Featurizer config: audio_n_fft {self.n_fft} is too short for F0 down to "
                              f"{c.audio_f0_min_hz} Hz (needs at least {2 * self.max_lag} samples).")
        self.yin_fft = 1 << int(np.ceil(np.log2(self.n_fft + self.yin_width)))
        self.mean = np.asarray(c.audio_mean, dtype=np.float32)
        self.std = np.asarray(c.audio_std, dtype=np.float32)
        from scipy.fft import dct

        self._dct = dct

    @property
    def frame_rate(self) -> float:
        return self.config.audio_frame_rate

    def num_frames(self, num_samples: int) -> int:
        return 0 if num_samples <= 0 else 1 + num_samples // self.hop

    def extract(self, audio: np.ndarray, normalize: bool | None = None) -> np.ndarray:
        """(N,) float audio at the config's sample rate -> (1 + N // hop, 40) float32 features."""
        audio = np.asarray(audio)
        if audio.ndim != 1:
            raise DataError(f"Audio for the audio featurizer must be mono (1-D), got shape {audio.shape}.")
        if audio.size == 0:
            return np.zeros((0, self.config.audio_dim), dtype=np.float32)
        y = np.nan_to_num(audio.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
        # Audio belongs in [-1, 1]; clipping absurd values keeps every product below float32 overflow.
        y = np.clip(y, -1e3, 1e3)
        frames = self._frames(y)                                   # (T, n_fft)
        with np.errstate(all="ignore"):
            raw = self._raw_features(frames)
        normalize = self.config.audio_normalize if normalize is None else normalize
        if normalize:
            raw = (raw - self.mean) / self.std
            np.clip(raw, -NORMALIZED_CLIP, NORMALIZED_CLIP, out=raw)
        return np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)

    # ---- internals -------------------------------------------------------------------------
    def _frames(self, y: np.ndarray) -> np.ndarray:
        pad = self.n_fft // 2
        padded = np.pad(y, (pad, pad))
        n = 1 + len(y) // self.hop
        needed = (n - 1) * self.hop + self.n_fft
        if len(padded) < needed:
            padded = np.pad(padded, (0, needed - len(padded)))
        return np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)[:: self.hop][:n]

    def _raw_features(self, frames: np.ndarray) -> np.ndarray:
        c = self.config
        spectrum = np.fft.rfft(frames * self.window, axis=1)
        mag = np.abs(spectrum).astype(np.float32)                  # (T, F)
        power = mag * mag

        mel_db = 10.0 * np.log10(np.maximum(power @ self.mel_basis.T, 1e-10))
        mfcc = self._dct(mel_db, type=2, norm="ortho", axis=1)[:, :20]

        chroma = power @ self.chroma_basis.T
        peak = chroma.max(axis=1, keepdims=True)
        chroma = np.where(peak > 1e-10, chroma / np.maximum(peak, 1e-10), 0.0)

        rms = np.sqrt(np.mean(frames.astype(np.float32) ** 2, axis=1))
        rms_db = 20.0 * np.log10(np.maximum(rms, 1e-5))
        signs = frames >= 0
        zcr = np.count_nonzero(signs[:, 1:] != signs[:, :-1], axis=1) / self.n_fft

        total = mag.sum(axis=1, keepdims=True)
        weights = np.where(total > 1e-10, mag / np.maximum(total, 1e-10), 0.0)
        centroid = weights @ self.freqs_khz
        bandwidth = np.sqrt(np.maximum((weights * (self.freqs_khz[None, :] - centroid[:, None]) ** 2).sum(1), 0.0))
        cumulative = np.cumsum(mag, axis=1)
        rolloff_bin = np.argmax(cumulative >= 0.85 * cumulative[:, -1:], axis=1)
        rolloff = np.where(total[:, 0] > 1e-10, self.freqs_khz[rolloff_bin], 0.0)
        power_floor = np.maximum(power, 1e-10)
        flatness = np.exp(np.mean(np.log(power_floor), axis=1)) / np.mean(power_floor, axis=1)

        f0_hz, aperiodicity = self._yin(frames)
        loud = rms_db > c.audio_silence_db
        voiced = loud & (aperiodicity < c.audio_voicing_threshold)
        log_f0 = np.where(voiced, np.log(np.maximum(f0_hz, 1.0)), 0.0)
        voicing = np.where(loud, np.clip(1.0 - aperiodicity, 0.0, 1.0), 0.0)

        columns = [mfcc, chroma, rms_db[:, None], zcr[:, None], centroid[:, None], bandwidth[:, None],
                   rolloff[:, None], flatness[:, None], log_f0[:, None], voicing[:, None]]
        return np.concatenate([np.asarray(col, dtype=np.float32) for col in columns], axis=1)

    def _yin(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """F0 (Hz) and aperiodicity (CMND at the chosen lag) per frame."""
        x = frames.astype(np.float64)
        width, max_lag = self.yin_width, self.max_lag
        head = x[:, :width]
        # r(tau) = sum_j x[j] x[j + tau] for j < width, by FFT cross-correlation.
        corr = np.fft.irfft(np.conj(np.fft.rfft(head, self.yin_fft, axis=1)) * np.fft.rfft(x, self.yin_fft, axis=1),
                            self.yin_fft, axis=1)[:, : max_lag + 1]
        energy = np.cumsum(np.pad(x * x, ((0, 0), (1, 0))), axis=1)
        lags = np.arange(max_lag + 1)
        shifted_energy = energy[:, lags + width] - energy[:, lags]
        diff = np.maximum(energy[:, width:width + 1] + shifted_energy - 2.0 * corr, 0.0)
        diff[:, 0] = 0.0
        running = np.cumsum(diff[:, 1:], axis=1)
        cmnd = np.ones_like(diff)
        ok = running > 1e-12
        cmnd[:, 1:] = np.where(ok, diff[:, 1:] * lags[1:] / np.maximum(running, 1e-12), 1.0)

        search = cmnd[:, self.min_lag: max_lag + 1]
        interior = np.zeros_like(search, dtype=bool)
        interior[:, 1:-1] = (search[:, 1:-1] <= search[:, :-2]) & (search[:, 1:-1] < search[:, 2:])
        dips = interior & (search < YIN_TROUGH_THRESHOLD)
        first_dip = np.argmax(dips, axis=1)
        best = np.where(dips.any(axis=1), first_dip, np.argmin(search, axis=1))
        lag = best + self.min_lag
        rows = np.arange(len(x))
        aperiodicity = np.clip(cmnd[rows, lag], 0.0, 1.0)
        # Parabolic refinement of the lag between its neighbours.
        left = cmnd[rows, np.maximum(lag - 1, 1)]
        right = cmnd[rows, np.minimum(lag + 1, max_lag)]
        mid = cmnd[rows, lag]
        denom = left - 2.0 * mid + right
        shift = np.where(np.abs(denom) > 1e-12, 0.5 * (left - right) / np.where(denom == 0, 1.0, denom), 0.0)
        refined = lag + np.clip(shift, -1.0, 1.0)
        f0 = self.config.sample_rate / np.maximum(refined, 1.0)
        return f0, aperiodicity


class EGeMAPSExtractor:
    """Optional extra: openSMILE eGeMAPSv02 low-level descriptors (25 per 10 ms frame).

    Licence warning: openSMILE is distributed by audEERING under a research-only,
    NON-COMMERCIAL licence; it is therefore not a dependency of moodlens and not part of the
    default 40-d features. Install it yourself (`pip install opensmile`) if your use allows.
    """

    def __init__(self, sample_rate: int = 16_000):
        try:
            import opensmile
        except ImportError:
            raise ConfigError("openSMILE eGeMAPS features need the `opensmile` package (non-commercial "
                              "licence), which is not installed; `pip install opensmile` if your use allows.") from None
        self.sample_rate = sample_rate
        self.smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                     feature_level=opensmile.FeatureLevel.LowLevelDescriptors)

    @property
    def feature_names(self) -> list[str]:
        return list(self.smile.feature_names)

    def extract(self, audio: np.ndarray) -> np.ndarray:
        frame = self.smile.process_signal(np.asarray(audio, dtype=np.float32), self.sample_rate)
        return np.nan_to_num(frame.to_numpy(dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def opensmile_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("opensmile") is not None
