"""The seed papers' experiments on a user's data: one function each, several seeds, resumable.

=================  ==========================================  ===============================
module             paper (seed)                                entry point
=================  ==========================================  ===============================
layer_removal      Zhi et al. 2017 (000)                       ``run(config, out)``
transferability    Yosinski et al. 2014 (001)                  ``run(config, out)``
keep_classifier    Shermin et al. 2019 (003)                   ``run(config, out)``
binary_aux         Borthakur & Einhorn (004)                   ``run(config, out)``
=================  ==========================================  ===============================

Each writes ``results.json`` after every finished cell (a killed run keeps it; the same command
goes on) and a PNG, and logs one line per cell.
"""
