"""A study: collect run directories, aggregate them over seeds, plot and report.

The submodules are imported where they are used: a training run imports only the light one
(protocol), not the statistics stack (pandas, scipy) the report and the selection need."""
