"""What people look at: the live terminal view and the progress chart.

``swarm.ui.progress`` reads a running experiment's progress from its ``run.log``;
``swarm.ui.live`` renders the live view of ``swarm run`` and ``swarm status --watch``;
``swarm.ui.plot`` draws the val_bpb chart of ``swarm plot``.
"""
