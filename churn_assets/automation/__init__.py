"""Jobs, schedules and sensors that run the graph by themselves."""

jobs: list = []
schedules: list = []
sensors: list = []
