"""
Worker processes (C{--workers N}): the parent that opens the listening
socket and supervises N workers (L{supervisor}), and how the workers tell
each other what they counted (L{peers}).
"""
