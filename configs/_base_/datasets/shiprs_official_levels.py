# Official ShipRSImageNet class list of each level (level_0 .. level_3), in the order
# of the official release. The VOC XML fields <level_k> are read as 1-based indices
# into these lists (inferred from the official XML -> COCO converter); the dataset
# checks them against <name> and counts mismatches (ShipRSImageNetDataset level_names).
shiprs_level_names = [
    # level_0 (2)
    [
        'Ship', 'Dock',
    ],
    # level_1 (4)
    [
        'Other Ship', 'Warship', 'Merchant', 'Dock',
    ],
    # level_2 (25)
    [
        'Other Ship', 'Other Warship', 'Submarine', 'Aircraft Carrier', 'Cruiser',
        'Destroyer', 'Frigate', 'Patrol', 'Landing', 'Commander', 'Auxiliary Ships',
        'Other Merchant', 'Container Ship', 'RoRo', 'Cargo', 'Barge', 'Tugboat', 'Ferry',
        'Yacht', 'Sailboat', 'Fishing Vessel', 'Oil Tanker', 'Hovercraft', 'Motorboat',
        'Dock',
    ],
    # level_3 (50)
    [
        'Other Ship', 'Other Warship', 'Submarine', 'Other Aircraft Carrier', 'Enterprise',
        'Nimitz', 'Midway', 'Ticonderoga', 'Other Destroyer', 'Atago DD',
        'Arleigh Burke DD', 'Hatsuyuki DD', 'Hyuga DD', 'Asagiri DD', 'Other Frigate',
        'Perry FF', 'Patrol', 'Other Landing', 'YuTing LL', 'YuDeng LL', 'YuDao LL',
        'YuZhao LL', 'Austin LL', 'Osumi LL', 'Wasp LL', 'LSD 41 LL', 'LHA LL', 'Commander',
        'Other Auxiliary Ship', 'Medical Ship', 'Test Ship', 'Training Ship', 'AOE',
        'Masyuu AS', 'Sanantonio AS', 'EPF', 'Other Merchant', 'Container Ship', 'RoRo',
        'Cargo', 'Barge', 'Tugboat', 'Ferry', 'Yacht', 'Sailboat', 'Fishing Vessel',
        'Oil Tanker', 'Hovercraft', 'Motorboat', 'Dock',
    ],
]
