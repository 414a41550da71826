# Label tree of the bundled synthetic dataset (tools/generate_synthetic_dataset.py):
# 16 nodes, 10 leaves, 3 levels, two top-level families. Class order = class index.
# Objects of internal nodes are annotated 'Other <node>' and reallocated to it.
label_tree = dict(
    paths=[
        'Vessel',
        'Vessel/Cargo Ship',
        'Vessel/Cargo Ship/Container Ship',
        'Vessel/Cargo Ship/Bulk Carrier',
        'Vessel/Cargo Ship/Oil Tanker',
        'Vessel/Warship',
        'Vessel/Warship/Destroyer',
        'Vessel/Warship/Frigate',
        'Vessel/Warship/Patrol Boat',
        'Aircraft',
        'Aircraft/Airliner',
        'Aircraft/Airliner/Twin Jet',
        'Aircraft/Airliner/Quad Jet',
        'Aircraft/Fighter',
        'Aircraft/Fighter/Delta Wing',
        'Aircraft/Fighter/Swept Wing',
    ],
    other_patterns=[r'^Other[ _](.+)$'],
)
num_classes = len(label_tree['paths'])
