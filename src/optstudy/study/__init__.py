"""A study: collect run directories, aggregate them over seeds, plot and report.

The submodules are imported where they are used: a training run imports only the light ones
(protocol, select), not the statistics stack (pandas, scipy) the report needs."""
