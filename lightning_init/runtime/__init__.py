"""Runtime helpers shared by the engines (library-internal, no public names).

- ``hooks``: hooks as a resource (``HookHandles.remove()`` is idempotent);
- ``no_trace``: ``no_side_effects``, the mode of the check's and the auto policy's passes;
- ``sparse``: the stored values of sparse tensors and gradients;
- ``distributed``: full-tensor statistics, histograms and fingerprints of DTensors;
- ``options``: the one parser of the options arguments (``check=``, ``diagnostics=``).
"""
