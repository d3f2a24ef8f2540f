"""Quasi-static strain elastography: DP and CNN coarse displacement, GLUE, LSQ/Kalman strain.

Modules: :mod:`.bandpass` (zero-phase RF band-pass, as a scanner's receive chain), :mod:`.dp`
(Rivaz 2008 dynamic programming), :mod:`.glue` (Hashemi & Rivaz 2017), :mod:`.lsq`
(least-squares and Kalman strain), :mod:`.flownet` (compact flow CNN, GLUENet's coarse stage),
:mod:`.train` (training it on simulated pairs), :mod:`.pipeline` (the whole chain and the store
runner) and :mod:`.study` (failure-rate study of DP+GLUE vs CNN+GLUE).
"""
