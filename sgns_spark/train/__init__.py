"""Training: the schedule (which rows and pairs meet when), the executor task, the kernel, the
driver loop and the model store."""
