"""Analysis of training curves, pure NumPy/SciPy on a member's arrays, shared by plots, reports and the command line:

  events    threshold crossings (memorisation and grokking epochs), loss spikes, sudden drops off a plateau, the
            model-wise double-descent peak, the interpolation threshold and where more data hurts, Saxe et al.'s
            solution for a deep linear network's modes
  curves    the shape of a loss curve: Kneedle's knee, the power law a t^-b + c by variable projection, the local
            slope, and resid_power / psd_tail (how far, and how, a loss departs from a local power law)
  validate  a store's audit: complete members, points at each cadence, NaN and inf, monotone steps, duplicates

`python -m ddjax.analysis validate DIR` and `python -m ddjax.analysis fit DIR --metric step_loss` run the last two on
a store.
"""

from ddjax.analysis.curves import (PowerLaw, fit_curve, kneedle, local_slope, log_binned, loss_shape,
                                   power_law_fit, psd_tail, resid_power)
from ddjax.analysis.events import (DataHurts, DoubleDescent, Drop, Grokking, Spike, change_across, crossing_epoch,
                                   default_window, double_descent_peak, drop_summary, grokking, grokking_summary,
                                   interpolation_threshold, loss_spikes, more_data_hurts, saxe_mode, saxe_time,
                                   step_spikes, sudden_drop, window_change)

__all__ = [
    'DataHurts', 'DoubleDescent', 'Drop', 'Grokking', 'PowerLaw', 'Spike', 'change_across', 'crossing_epoch',
    'default_window', 'double_descent_peak', 'drop_summary', 'fit_curve', 'grokking', 'grokking_summary',
    'interpolation_threshold', 'kneedle', 'local_slope', 'log_binned', 'loss_shape', 'loss_spikes',
    'more_data_hurts', 'power_law_fit', 'psd_tail', 'resid_power', 'saxe_mode', 'saxe_time', 'step_spikes',
    'sudden_drop', 'window_change']
